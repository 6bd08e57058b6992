//! The `Date` header value, formatted at most once per second per thread.
//!
//! Formatting an IMF-fixdate costs more than the rest of a small response's
//! headers together; the cache makes it a clock read and a compare. The
//! clock is `CLOCK_REALTIME_COARSE` (a vDSO read of the last tick), precise
//! to a few milliseconds, which is far finer than the header's one second.

use std::cell::RefCell;
use std::time::{Duration, SystemTime};

/// Length of an IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
const HTTP_DATE_BYTES: usize = 29;

struct DateCache {
    second: u64,
    text: [u8; HTTP_DATE_BYTES],
}

thread_local! {
    static CACHE: RefCell<DateCache> = const { RefCell::new(DateCache { second: 0, text: [b' '; HTTP_DATE_BYTES] }) };
}

fn coarse_unix_seconds() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass and nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    if rc == 0 && ts.tv_sec > 0 {
        ts.tv_sec as u64
    } else {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// Calls `f` with the current `Date` value.
pub fn with_http_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    let now = coarse_unix_seconds();
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.second != now {
            let formatted =
                httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(now));
            if formatted.len() == HTTP_DATE_BYTES {
                c.text.copy_from_slice(formatted.as_bytes());
                c.second = now;
            }
        }
        f(&c.text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_is_an_imf_fixdate() {
        let s = with_http_date(|d| String::from_utf8(d.to_vec()).unwrap());
        assert_eq!(s.len(), HTTP_DATE_BYTES);
        assert!(s.ends_with(" GMT"));
        assert!(httpdate::parse_http_date(&s).is_ok());
    }
}
