//! may-static: the files of one directory, loaded at start, served by
//! may_minihttp from memory (`/` is `index.html`). perf/run points it at the
//! same directory as nginx, so both static peers send uringnotes' own bytes.
//!
//! Usage: may-static ADDR DIR (worker threads: MAY_WORKERS, default 1)

use std::collections::HashMap;
use std::io;
use std::path::Path;

use may_minihttp::{HttpServer, HttpService, Request, Response};

/// A file's bytes and its `Content-Type` header line, leaked: they live as
/// long as the process and may_minihttp takes `&'static` bodies without a copy.
#[derive(Clone, Copy)]
struct File {
    body: &'static str,
    content_type: &'static str,
}

#[derive(Clone)]
struct Static {
    files: &'static HashMap<String, File>,
}

impl HttpService for Static {
    fn call(&mut self, req: Request, rsp: &mut Response) -> io::Result<()> {
        let path = match req.path() {
            "/" => "/index.html",
            p => p,
        };
        match self.files.get(path) {
            Some(f) => rsp.header(f.content_type).body(f.body),
            None => rsp.status_code(404, "Not Found").body("not found\n"),
        }
        Ok(())
    }
}

fn load(root: &Path, dir: &Path, files: &mut HashMap<String, File>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            load(root, &path, files)?;
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let url = format!("/{}", path.strip_prefix(root).expect("under root").display());
        let content_type = if url.ends_with(".html") {
            "Content-Type: text/html; charset=utf-8"
        } else {
            "Content-Type: application/json"
        };
        files.insert(
            url,
            File {
                body: Box::leak(text.into_boxed_str()),
                content_type,
            },
        );
    }
    Ok(())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(dir)) = (args.next(), args.next()) else {
        eprintln!("usage: may-static ADDR DIR");
        std::process::exit(2);
    };
    let workers = std::env::var("MAY_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(1);
    may::config().set_workers(workers).set_stack_size(0x4000);
    let mut files = HashMap::new();
    let root = Path::new(&dir);
    if let Err(e) = load(root, root, &mut files) {
        eprintln!("may-static: reading {dir}: {e}");
        std::process::exit(1);
    }
    let files: &'static HashMap<String, File> = Box::leak(Box::new(files));
    let server = match HttpServer(Static { files }).start(&addr) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("may-static: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("may-static listening on http://{addr} ({} files, {workers} workers)", files.len());
    let _ = server.join();
}
