//! The notes page in a real browser: Debian's headless Chromium, driven over
//! WebDriver (`chromedriver` + the `fantoccini` client), against the real
//! binary on loopback.
//!
//! Scenarios: add a note through the form with JavaScript off (plain form
//! post and redirect) and on (no reload); a stored-XSS note stays inert text,
//! whether rendered by the server or inserted live; a note added on one page
//! appears on another open page within a second, without a reload, through
//! `GET /events`; a reload of the page is revalidated with its `ETag` and
//! answered `304 Not Modified`, and the page is shown from the browser's
//! cache; the same page over HTTPS, with the test CA trusted by the browser
//! (its own NSS database), as a secure context that loads nothing over
//! plain HTTP. Screenshots land in `target/test-artifacts/`.
//!
//! Chromium, chromedriver and NSS's `certutil` must be installed
//! (`tools/test` installs them as root). Without them these tests fail,
//! loudly: setting `URINGNOTES_SKIP_BROWSER=1` skips them outside CI only.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::Server;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// NSS's tool (Debian's `libnss3-tools`): Chromium on Linux trusts the CAs
/// in `$HOME/.pki/nssdb`.
const CERTUTIL: &str = "/usr/bin/certutil";
/// Longest wait for anything the browser should do promptly.
const WAIT_MAX: Duration = Duration::from_secs(10);
/// The issue's promise: a note added anywhere is on open pages within this.
const LIVE_UPDATE_MAX: Duration = Duration::from_secs(1);

/// Chromium instances are heavy on a 2-core machine: one test at a time.
static ONE_BROWSER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A chromedriver process in its own process group (so the browsers it
/// starts are killed with it, even if a test panics before closing them).
struct Driver {
    child: Child,
    url: String,
    _profiles: tempfile::TempDir,
}

impl Driver {
    /// Starts chromedriver on a free loopback port, or returns `None` when
    /// browser tests are explicitly skipped outside CI. With `ca_pem`, its
    /// home directory has an NSS database that trusts that CA certificate
    /// (the browsers chromedriver starts inherit it).
    fn start_trusting(ca_pem: Option<&Path>) -> Option<Driver> {
        let mut needed = vec![CHROMIUM, CHROMEDRIVER];
        if ca_pem.is_some() {
            needed.push(CERTUTIL);
        }
        let missing: Vec<&str> = needed
            .into_iter()
            .filter(|p| !Path::new(p).exists())
            .collect();
        if !missing.is_empty() {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            if !ci && std::env::var("URINGNOTES_SKIP_BROWSER").is_ok_and(|v| v == "1") {
                eprintln!(
                    "SKIPPING browser test: {missing:?} missing and URINGNOTES_SKIP_BROWSER=1"
                );
                return None;
            }
            panic!(
                "browser tests need {missing:?}: install the Debian packages chromium, \
                 chromium-driver and libnss3-tools (tools/test does this when run as root)"
            );
        }
        let profiles = tempfile::tempdir().expect("tempdir");
        let home = profiles.path().join("home");
        if let Some(ca) = ca_pem {
            let db = home.join(".pki/nssdb");
            std::fs::create_dir_all(&db).expect("nssdb dir");
            let db_arg = format!("sql:{}", db.display());
            for args in [
                vec!["-N", "-d", &db_arg, "--empty-password"],
                vec![
                    "-A",
                    "-d",
                    &db_arg,
                    "-n",
                    "uringnotes test CA",
                    "-t",
                    "C,,",
                    "-i",
                    ca.to_str().unwrap(),
                ],
            ] {
                let out = Command::new(CERTUTIL)
                    .args(&args)
                    .output()
                    .expect("run certutil");
                assert!(
                    out.status.success(),
                    "certutil {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let mut profiles = Some(profiles);
        for _attempt in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let mut command = Command::new(CHROMEDRIVER);
            command
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0);
            if ca_pem.is_some() {
                command.env("HOME", &home);
            }
            let child = command.spawn().expect("spawn chromedriver");
            let mut driver = Driver {
                child,
                url: format!("http://127.0.0.1:{port}"),
                _profiles: profiles
                    .take()
                    .unwrap_or_else(|| tempfile::tempdir().expect("tempdir")),
            };
            let deadline = Instant::now() + WAIT_MAX;
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(driver);
                }
                if let Ok(Some(_)) = driver.child.try_wait() {
                    break; // the port was taken meanwhile: try another
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            driver.kill();
        }
        panic!("chromedriver did not start");
    }

    /// A new browser session with a fresh profile.
    async fn session(&self, javascript: bool) -> Client {
        let profile = tempfile::Builder::new()
            .prefix("chromium-profile-")
            .tempdir_in(self._profiles.path())
            .expect("profile dir")
            .keep();
        let mut prefs = json!({});
        if !javascript {
            prefs = json!({ "profile.managed_default_content_settings.javascript": 2 });
        }
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-quic", "--disable-dev-shm-usage",
                    "--disable-crash-reporter", "--disable-breakpad",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
                "prefs": prefs,
            }
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a chromium session")
    }

    fn kill(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) on the process group we created for chromedriver
        // and the browsers it started.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs one browser scenario on a single-threaded runtime.
fn run_browser_test<F, Fut>(f: F)
where
    F: FnOnce(Driver) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    run_browser_test_trusting(None, f)
}

/// The same, with a browser that trusts the CA in `ca_pem`.
fn run_browser_test_trusting<F, Fut>(ca_pem: Option<&Path>, f: F)
where
    F: FnOnce(Driver) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let _one = ONE_BROWSER_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let Some(driver) = Driver::start_trusting(ca_pem) else {
        return;
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f(driver));
}

fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
    let path = artifacts_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).expect("write screenshot");
    eprintln!("screenshot: {}", path.display());
}

fn base_url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

async fn js(client: &Client, script: &str, args: Vec<Value>) -> Value {
    client
        .execute(script, args)
        .await
        .unwrap_or_else(|e| panic!("script {script:?} failed: {e}"))
}

/// Polls `check` every 10 ms until it is true or `max` passes; returns how
/// long it took.
async fn wait_until<F, Fut>(what: &str, max: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        if started.elapsed() > max {
            panic!("timed out after {max:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The texts of the notes listed on the page, top first.
async fn listed_texts(client: &Client) -> Vec<String> {
    let v = js(
        client,
        "return Array.from(document.querySelectorAll('#notes > li > p')).map(p => p.textContent)",
        vec![],
    )
    .await;
    serde_json::from_value(v).expect("a list of strings")
}

async fn is_listed(client: &Client, text: &str) -> bool {
    listed_texts(client).await.iter().any(|t| t == text)
}

/// Opens the page and waits until its event stream is open.
async fn open_live(client: &Client, base: &str) {
    client.goto(&format!("{base}/")).await.expect("open page");
    wait_until("the live-update stream to open", WAIT_MAX, || async {
        js(
            client,
            "return document.documentElement.getAttribute('data-live')",
            vec![],
        )
        .await
            == "open"
    })
    .await;
    // A marker that a reload would wipe out.
    js(client, "window.__notReloaded = true; return true", vec![]).await;
}

async fn not_reloaded(client: &Client) -> bool {
    js(client, "return window.__notReloaded === true", vec![]).await == true
}

/// Adds `text` through the page's form (typing and clicking like a user).
async fn add_through_form(client: &Client, text: &str) {
    type_note(client, text).await;
    submit(client).await;
}

async fn type_note(client: &Client, text: &str) {
    let area = client.find(Locator::Css("#text")).await.expect("textarea");
    area.send_keys(text).await.expect("type the note");
}

async fn submit(client: &Client) {
    client
        .find(Locator::Css("form button[type=submit]"))
        .await
        .expect("submit button")
        .click()
        .await
        .expect("click submit");
}

/// Posts a note (`text/plain`) to B's server; returns the status.
type Poster = Box<dyn FnOnce(&'static str) -> u16 + Send>;

/// Posts over plain HTTP to the server at `base` (`http://ADDR`).
fn plain_poster(base: &str) -> Poster {
    let addr: SocketAddr = base
        .strip_prefix("http://")
        .and_then(|s| s.parse().ok())
        .expect("base is http://ADDR");
    Box::new(move |text| {
        common::Client::connect(addr)
            .request(
                "POST",
                "/notes",
                &[("Content-Type", "text/plain")],
                text.as_bytes(),
            )
            .status
    })
}

/// Two live pages, at `base_a` and `base_b` (two cores of one node, or two
/// nodes of a cluster): a note added through page A's form, and one posted
/// to B's server with `post_b`, each appear on the other page within
/// [`LIVE_UPDATE_MAX`], without a reload. `name` prefixes the screenshots.
async fn live_update_between(
    driver: &Driver,
    name: &str,
    base_a: &str,
    base_b: &str,
    post_b: Poster,
) -> LiveUpdate {
    let a = driver.session(true).await;
    let b = driver.session(true).await;
    open_live(&a, base_a).await;
    open_live(&b, base_b).await;

    let from_form = "added on page A, seen on page B";
    type_note(&a, from_form).await;
    let started = Instant::now();
    submit(&a).await;
    wait_until("the note on page B", LIVE_UPDATE_MAX, || {
        is_listed(&b, from_form)
    })
    .await;
    let a_to_b = started.elapsed();

    let from_api = "posted over HTTP, seen on page A";
    let started = Instant::now();
    let posted = tokio::task::spawn_blocking(move || post_b(from_api))
        .await
        .expect("post");
    assert_eq!(posted, 201);
    wait_until("the note on page A", LIVE_UPDATE_MAX, || {
        is_listed(&a, from_api)
    })
    .await;
    let b_to_a = started.elapsed();

    wait_until("page A to show its own note", WAIT_MAX, || {
        is_listed(&a, from_form)
    })
    .await;
    assert!(
        not_reloaded(&a).await && not_reloaded(&b).await,
        "a page reloaded"
    );
    for page in [&a, &b] {
        let count = js(
            page,
            "return document.getElementById('count').textContent",
            vec![],
        )
        .await;
        assert_eq!(count, "2 notes", "the footer counts live notes");
        assert_eq!(
            listed_texts(page).await[..2],
            [from_api.to_string(), from_form.to_string()],
            "newest first, each note once"
        );
    }
    // Both pages name the same origin node for the note added on A (A from
    // its POST answer, B from the event stream).
    let origin_a = origin_of(&a, from_form).await;
    assert_eq!(
        origin_a,
        origin_of(&b, from_form).await,
        "same origin on both pages"
    );
    screenshot(&a, &format!("{name}-page-a")).await;
    screenshot(&b, &format!("{name}-page-b")).await;
    a.close().await.expect("close A");
    b.close().await.expect("close B");
    LiveUpdate {
        a_to_b,
        b_to_a,
        origin_of_form_note: origin_a,
    }
}

/// What [`live_update_between`] measured and saw.
struct LiveUpdate {
    a_to_b: Duration,
    b_to_a: Duration,
    /// How the pages name the node that the note added on page A came from.
    origin_of_form_note: String,
}

/// The "node NAME" part of the listed note with this text.
async fn origin_of(page: &Client, text: &str) -> String {
    let v = js(
        page,
        "const li = Array.from(document.querySelectorAll('#notes > li'))\
           .find(li => li.querySelector('p').textContent === arguments[0]);\
         return li.querySelector('small').textContent.split(' \\u00b7 ')[1]",
        vec![json!(text)],
    )
    .await;
    v.as_str().expect("an origin").to_string()
}

#[test]
fn form_without_javascript_adds_a_note() {
    run_browser_test(|driver| async move {
        let server = Server::start(&["--cores", "1"]);
        let base = base_url(server.addr);
        let client = driver.session(false).await;
        client.goto(&format!("{base}/")).await.expect("open page");
        let text = "written without JavaScript: ünïcode & <b>tags</b>";
        add_through_form(&client, text).await;
        // The form posts, the server answers 303, the browser loads `/`.
        wait_until("the note after the redirect", WAIT_MAX, || async {
            let Ok(li) = client.find(Locator::Css("#notes > li > p")).await else {
                return false;
            };
            li.text().await.is_ok_and(|t| t == text)
        })
        .await;
        assert_eq!(
            client.current_url().await.expect("url").as_str(),
            format!("{base}/")
        );
        let live = client.find(Locator::Css("#live")).await.expect("#live");
        assert!(
            !live.is_displayed().await.expect("displayed"),
            "without JavaScript there is no live indicator"
        );
        let notes = server.all_notes();
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0]["text"], text);
        screenshot(&client, "no-javascript").await;
        client.close().await.expect("close");
    });
}

#[test]
fn form_with_javascript_adds_without_reload() {
    run_browser_test(|driver| async move {
        let server = Server::start(&["--cores", "1"]);
        let base = base_url(server.addr);
        for i in 0..3 {
            server.post_note(&format!("older note {i}"));
        }
        let client = driver.session(true).await;
        open_live(&client, &base).await;
        let text = "added with JavaScript\nsecond line";
        add_through_form(&client, text).await;
        wait_until("the new note at the top", WAIT_MAX, || async {
            listed_texts(&client)
                .await
                .first()
                .is_some_and(|t| t == text)
        })
        .await;
        assert!(not_reloaded(&client).await, "the page reloaded");
        let texts = listed_texts(&client).await;
        assert_eq!(texts.len(), 4, "{texts:?}");
        assert_eq!(texts.iter().filter(|t| *t == text).count(), 1, "shown once");
        let area = js(
            &client,
            "return document.getElementById('text').value",
            vec![],
        )
        .await;
        assert_eq!(area, "", "the form is cleared");
        let status = js(
            &client,
            "return document.getElementById('status').textContent",
            vec![],
        )
        .await;
        assert_eq!(status, "Added.");
        // An empty note is refused by the browser (required) and a
        // whitespace-only one by the server, with its message shown.
        add_through_form(&client, "   ").await;
        wait_until("the server's refusal shown", WAIT_MAX, || async {
            js(
                &client,
                "return document.getElementById('status').className",
                vec![],
            )
            .await
                == "bad"
        })
        .await;
        assert_eq!(server.all_notes().len(), 4);
        screenshot(&client, "desktop").await;
        client.set_window_size(390, 844).await.expect("phone size");
        let overflow = js(
            &client,
            "return document.documentElement.scrollWidth > window.innerWidth",
            vec![],
        )
        .await;
        assert_eq!(overflow, false, "no horizontal scrolling on a phone");
        screenshot(&client, "phone").await;
        client.close().await.expect("close");
    });
}

#[test]
fn xss_note_is_shown_as_text() {
    run_browser_test(|driver| async move {
        let server = Server::start(&["--cores", "1"]);
        let base = base_url(server.addr);
        let payloads = [
            "<img src=x onerror=alert(1)>",
            "<img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script>",
        ];
        let r = server.post_note(payloads[0]);
        assert_eq!(r.status, 201);
        let client = driver.session(true).await;
        open_live(&client, &base).await;
        // Rendered by the server ...
        assert!(is_listed(&client, payloads[0]).await);
        // ... inserted live from the event stream ...
        let r = server.post_note(payloads[1]);
        assert_eq!(r.status, 201);
        wait_until("the live XSS note", WAIT_MAX, || {
            is_listed(&client, payloads[1])
        })
        .await;
        // ... and added through the form.
        let third = "<svg onload=\"window.__pwned=3\"></svg>";
        add_through_form(&client, third).await;
        wait_until("the typed XSS note", WAIT_MAX, || is_listed(&client, third)).await;
        let injected = js(
            &client,
            "return document.querySelectorAll('#notes img, #notes script, #notes svg').length",
            vec![],
        )
        .await;
        assert_eq!(injected, 0, "no element was created from note text");
        assert_eq!(
            js(&client, "return typeof window.__pwned", vec![]).await,
            "undefined"
        );
        assert!(
            client.get_alert_text().await.is_err(),
            "no alert dialog is open"
        );
        // After a reload, all three come from the server's HTML again.
        client.refresh().await.expect("reload");
        for p in payloads.iter().chain([&third]) {
            assert!(is_listed(&client, p).await, "{p} listed as text");
        }
        assert_eq!(
            js(&client, "return document.querySelectorAll('#notes img, #notes script, #notes svg').length + (typeof window.__pwned === 'undefined' ? 0 : 100)", vec![]).await,
            0
        );
        screenshot(&client, "xss-as-text").await;
        client.close().await.expect("close");
    });
}

/// How many `GET /` the server answered 304 (from `/metrics`).
fn page_304s(server: &Server) -> u64 {
    let metrics = server.get("/metrics").text();
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("uringnotes_http_requests_total{route=\"page\",status=\"304\"} ")
        })
        .map_or(0, |v| v.trim().parse().expect("a count"))
}

/// The navigation's status, bytes on the wire and body bytes, as the
/// browser's Navigation Timing reports them.
async fn navigation(client: &Client) -> (u64, u64, u64) {
    let v = js(
        client,
        "const n = performance.getEntriesByType('navigation')[0];\
         return [n.responseStatus || 0, n.transferSize, n.encodedBodySize]",
        vec![],
    )
    .await;
    let n: Vec<u64> = serde_json::from_value(v).expect("three numbers");
    (n[0], n[1], n[2])
}

#[test]
fn a_reload_is_revalidated_and_answered_304() {
    run_browser_test(|driver| async move {
        let server = Server::start(&["--cores", "1"]);
        let base = base_url(server.addr);
        for i in 0..20 {
            server.post_note(&format!("note {i}, kept in the browser's cache"));
        }
        let client = driver.session(true).await;
        open_live(&client, &base).await;
        let first = listed_texts(&client).await;
        assert_eq!(first.len(), 20);
        let (_, first_transfer, body_bytes) = navigation(&client).await;
        let not_modified = page_304s(&server);

        // A reload: Chromium revalidates the page (`no-cache`) with its
        // ETag, the server answers 304, and the page comes from the cache.
        client.refresh().await.expect("reload");
        wait_until("the page after the reload", WAIT_MAX, || async {
            listed_texts(&client).await.len() == 20
        })
        .await;
        assert!(!not_reloaded(&client).await, "it was a real reload");
        assert_eq!(
            page_304s(&server),
            not_modified + 1,
            "the reload was answered 304"
        );
        assert_eq!(listed_texts(&client).await, first, "the same notes");
        let (status, transfer, body) = navigation(&client).await;
        eprintln!(
            "reload: first load {first_transfer} bytes on the wire; reload {transfer} bytes \
             (status {status}), body {body} bytes from the cache"
        );
        assert_eq!(body, body_bytes, "the cached body");
        assert!(
            transfer < body,
            "the reload moved only headers ({transfer} bytes, body {body})"
        );
        screenshot(&client, "reload-304").await;

        // A new note changes the tag: the next reload gets the new page.
        server.post_note("added after the first reload");
        client.refresh().await.expect("reload");
        wait_until("the new note after a reload", WAIT_MAX, || {
            is_listed(&client, "added after the first reload")
        })
        .await;
        assert_eq!(page_304s(&server), not_modified + 1, "a 200 this time");
        client.close().await.expect("close");
    });
}

#[test]
fn live_update_reaches_another_open_page() {
    run_browser_test(|driver| async move {
        // Two cores, and each page on its own connection: the note crosses
        // cores through the inbox before it reaches the other page's feed.
        let server = Server::start(&["--cores", "2"]);
        let base = base_url(server.addr);
        let seen =
            live_update_between(&driver, "two-cores", &base, &base, plain_poster(&base)).await;
        eprintln!(
            "live update delay, two cores: form on A -> page B {:?}; HTTP POST -> page A {:?}",
            seen.a_to_b, seen.b_to_a
        );
        let name = server.get("/_status").json()["node"]["name"]
            .as_str()
            .expect("node name")
            .to_string();
        assert_eq!(seen.origin_of_form_note, format!("node {name}"));
    });
}

#[test]
fn live_update_crosses_cluster_nodes() {
    run_browser_test(|driver| async move {
        let tmp = tempfile::tempdir().unwrap();
        let cookie = tmp.path().join("cookie");
        std::fs::write(&cookie, "browser-test-cookie-0123456789abcdef\n").unwrap();
        let cookie = cookie.to_str().unwrap().to_string();
        let node_args = |name: &'static str, ip: &'static str| -> Vec<String> {
            [
                "--node-name",
                name,
                "--cores",
                "1",
                "--listen",
                ip,
                "--peer-listen",
                ip,
                "--cookie-file",
                &cookie,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        };
        let start = |dir: &str, args: &[String]| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Server::start_in(&tmp.path().join(dir), &args)
        };
        let a = start("a", &node_args("alpha", "127.0.0.1:0"));
        let mut b_args = node_args("beta", "127.0.0.2:0");
        b_args.push("--join".into());
        b_args.push(a.peer_addr.expect("node a's peer address").to_string());
        let b = start("b", &b_args);
        for node in [&a, &b] {
            assert!(
                common::wait_until(Duration::from_secs(30), || {
                    node.get("/_status").json()["cluster"]["members"]
                        .as_array()
                        .is_some_and(|m| m.iter().any(|m| m["connected"] == true))
                }),
                "the two nodes did not connect"
            );
        }
        let seen = live_update_between(
            &driver,
            "two-nodes",
            &base_url(a.addr),
            &base_url(b.addr),
            plain_poster(&base_url(b.addr)),
        )
        .await;
        eprintln!(
            "live update delay, two nodes: form on node A -> page on node B {:?}; HTTP POST to B -> page on A {:?}",
            seen.a_to_b, seen.b_to_a
        );
        assert_eq!(
            seen.origin_of_form_note, "node alpha",
            "named by its origin node"
        );
        // Node B's own page names both nodes in its footer.
        let page = b.get("/").text();
        assert!(
            page.contains(">beta</b>") && page.contains(">alpha</span> up"),
            "{page}"
        );
    });
}

#[test]
fn the_page_over_https_with_the_test_ca_trusted() {
    use common::tls::{self, Leaf, TestCa};
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&dir.path().join("pki"));
    let issued = ca.issue("server", &Leaf::default());
    let ca_pem = ca.ca_pem();
    run_browser_test_trusting(Some(&ca_pem), |driver| async move {
        let mut args = tls::tls_flags(&issued);
        args.extend(["--cores", "2", "--hsts-max-age", "60"].map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = Server::start(&args);
        assert_eq!(server.scheme, "https");
        // The name the certificate is for (it also covers 127.0.0.1).
        let base = format!("https://localhost:{}", server.addr.port());

        // Live updates between two HTTPS pages (two cores).
        let config = tls::client(&ca);
        let addr = server.addr;
        let poster: Poster = Box::new(move |text| {
            tls::connect(addr, &config)
                .request(
                    "POST",
                    "/notes",
                    &[("Content-Type", "text/plain")],
                    text.as_bytes(),
                )
                .status
        });
        let seen = live_update_between(&driver, "https-two-cores", &base, &base, poster).await;
        eprintln!(
            "live update delay over HTTPS: form on A -> page B {:?}; POST -> page A {:?}",
            seen.a_to_b, seen.b_to_a
        );

        let client = driver.session(true).await;
        open_live(&client, &base).await;
        let secure = js(
            &client,
            "return [location.protocol, window.isSecureContext]",
            vec![],
        )
        .await;
        assert_eq!(secure, json!(["https:", true]), "a trusted, secure page");
        let text = "added over HTTPS";
        add_through_form(&client, text).await;
        wait_until("the note over HTTPS", WAIT_MAX, || async {
            listed_texts(&client)
                .await
                .first()
                .is_some_and(|t| t == text)
        })
        .await;
        assert!(not_reloaded(&client).await, "the page reloaded");
        // No mixed content: everything the page loaded (script, style, icon,
        // the event stream, the form post) came from the HTTPS origin, and
        // every URL in the document is relative to it or https.
        let loaded = js(
            &client,
            "return performance.getEntriesByType('resource').map(e => e.name)",
            vec![],
        )
        .await;
        let loaded: Vec<String> = serde_json::from_value(loaded).expect("resource names");
        assert!(!loaded.is_empty());
        for url in &loaded {
            assert!(
                url.starts_with(&format!("{base}/")),
                "{url} loaded off the HTTPS origin"
            );
        }
        let urls = js(
            &client,
            "return Array.from(document.querySelectorAll('[src],[href],[action]'))\
               .map(e => e.src || e.href || e.action)",
            vec![],
        )
        .await;
        let urls: Vec<String> = serde_json::from_value(urls).expect("document URLs");
        for url in &urls {
            assert!(!url.starts_with("http:"), "{url} in the page is plain HTTP");
        }
        screenshot(&client, "https").await;
        client.close().await.expect("close");
    });
}
