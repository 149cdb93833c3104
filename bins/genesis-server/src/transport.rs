//! The connection layer under the router: [`serve`] accepts TCP connections and speaks
//! HTTP/1.1 on them with hyper, bounded where `axum::serve` is not:
//!
//! - `server.header_timeout`: a connection must send a request's headers within it, on
//!   a new connection and between requests on a kept-alive one (hyper's header read
//!   timeout, which runs whenever the connection waits for a request head), so silent,
//!   idle and byte-dripping (slowloris) connections are closed;
//! - `server.max_connections` and `server.max_connections_per_ip`: connections over a
//!   cap are answered a canned 503 and closed at once, counted in
//!   [`CONNECTIONS_REFUSED_TOTAL`]; open ones are [`CONNECTIONS_OPEN`].
//!
//! Graceful shutdown is `axum::serve`'s: when the shutdown future resolves the listener
//! closes, every connection is asked to finish its request in flight and close, and
//! [`serve`] returns once all have.
//!
//! [`Gate`] is the counter behind the caps, shared with the event-stream caps.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use crate::AppState;

/// The label of [`CONNECTIONS_REFUSED_TOTAL`]: the cap that refused.
pub(crate) use genesis::telemetry::catalogue::labels::REASON;
pub use genesis::telemetry::catalogue::{CONNECTIONS_OPEN, CONNECTIONS_REFUSED_TOTAL};

/// File descriptors left for everything but client connections (the store, logs,
/// outgoing agent and LLM calls) when `server.max_connections` is fitted under the
/// process's open-file limit.
const RESERVED_FDS: usize = 256;

/// Which cap a [`Gate`] refused at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// The total cap.
    Total,
    /// The cap of one key (a client IP, or a caller's subject).
    PerIp,
}

#[derive(Debug)]
struct Count<K> {
    total: usize,
    per_ip: HashMap<K, usize>,
}

impl<K> Default for Count<K> {
    fn default() -> Self {
        Count {
            total: 0,
            per_ip: HashMap::new(),
        }
    }
}

/// Counts things open at once (connections, event streams), in total and per key (a
/// client IP by default, or a caller's subject), against two caps. Entering and leaving
/// take one uncontended lock; the per-key map holds only keys with something open.
#[derive(Debug)]
pub(crate) struct Gate<K = IpAddr> {
    max_total: usize,
    max_per_ip: usize,
    count: Mutex<Count<K>>,
}

/// One slot of a [`Gate`], given back on drop.
#[derive(Debug)]
pub(crate) struct Pass<K: std::hash::Hash + Eq = IpAddr> {
    gate: Arc<Gate<K>>,
    ip: Option<K>,
}

impl<K: std::hash::Hash + Eq + Clone> Gate<K> {
    /// A gate with these caps (each at least 1).
    pub(crate) fn new(max_total: usize, max_per_ip: usize) -> Arc<Gate<K>> {
        Arc::new(Gate {
            max_total: max_total.max(1),
            max_per_ip: max_per_ip.max(1),
            count: Mutex::new(Count::default()),
        })
    }

    /// Takes a slot for `ip` (`None`: held to the total cap only), or says which cap is
    /// full.
    pub(crate) fn try_enter(self: &Arc<Self>, ip: Option<K>) -> Result<Pass<K>, Full> {
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        if count.total >= self.max_total {
            return Err(Full::Total);
        }
        if let Some(ip) = &ip {
            let n = count.per_ip.entry(ip.clone()).or_insert(0);
            if *n >= self.max_per_ip {
                return Err(Full::PerIp);
            }
            *n += 1;
        }
        count.total += 1;
        Ok(Pass {
            gate: Arc::clone(self),
            ip,
        })
    }

    /// Open now, in total.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.count
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

impl<K: std::hash::Hash + Eq> Drop for Pass<K> {
    fn drop(&mut self) {
        let mut count = self
            .gate
            .count
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        count.total = count.total.saturating_sub(1);
        if let Some(ip) = self.ip.take()
            && let std::collections::hash_map::Entry::Occupied(mut e) = count.per_ip.entry(ip)
        {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

/// Serves the app of `state` on `listener` until `shutdown` resolves, then stops
/// accepting and returns once every open connection has finished its request in
/// flight and closed (see the module docs for the limits applied). The caller bounds
/// that wait (`main.rs`: `server.shutdown_grace`).
pub async fn serve<F>(listener: TcpListener, state: Arc<AppState>, shutdown: F)
where
    F: Future<Output = ()> + Send,
{
    let server = &state.config.server;
    let header_timeout = server.header_timeout;
    let max_connections = fit_open_file_limit(server.max_connections, open_file_limit());
    let connections = Gate::new(max_connections, server.max_connections_per_ip);
    let refusals = Refusals::new(max_connections, server.max_connections_per_ip);
    let router = crate::app(Arc::clone(&state));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_error(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // A trusted proxy carries many clients: it is held to the total cap only.
        let ip = (!state.trusted_proxies.contains(peer.ip())).then_some(peer.ip());
        let pass = match connections.try_enter(ip) {
            Ok(pass) => pass,
            Err(full) => {
                refuse(&stream, full, &refusals);
                continue;
            }
        };
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(ConnectInfo(peer));
                router.clone().call(req)
            });
        let conn = http.serve_connection(TokioIo::new(stream), service);
        // Its own child token: the connection's task polls it at every wake-up, and a
        // child's waiter list is its own (a clone of `stop` would share one mutex
        // among all connections).
        let stop = stop.child_token();
        tracker.spawn(async move {
            metrics::gauge!(CONNECTIONS_OPEN).increment(1.0);
            tokio::pin!(conn);
            let served = tokio::select! {
                served = conn.as_mut() => served,
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection closed with an error");
            }
            metrics::gauge!(CONNECTIONS_OPEN).decrement(1.0);
            drop(pass);
        });
    }
    drop(listener);
    stop.cancel();
    tracker.close();
    tracker.wait().await;
}

/// The canned answers to a connection over a cap, naming the cap's value: built once
/// per [`serve`], each sent with one non-blocking write.
struct Refusals {
    total: Vec<u8>,
    per_ip: Vec<u8>,
}

impl Refusals {
    fn new(max_connections: usize, max_connections_per_ip: usize) -> Refusals {
        Refusals {
            total: canned_503(
                "max_connections",
                &format!(
                    "the server has server.max_connections {max_connections} connections open; retry shortly (rule: max_connections)"
                ),
            ),
            per_ip: canned_503(
                "max_connections_per_ip",
                &format!(
                    "this client has server.max_connections_per_ip {max_connections_per_ip} connections open; close some or retry shortly (rule: max_connections_per_ip)"
                ),
            ),
        }
    }
}

/// The canned answer to a connection over a cap: sent with one non-blocking write (a
/// new socket's send buffer is empty), then the connection is closed.
fn refuse(stream: &TcpStream, full: Full, refusals: &Refusals) {
    let (reason, answer) = match full {
        Full::Total => ("max_connections", &refusals.total),
        Full::PerIp => ("max_connections_per_ip", &refusals.per_ip),
    };
    metrics::counter!(CONNECTIONS_REFUSED_TOTAL, REASON => reason).increment(1);
    crate::count_error("resource");
    let _ = stream.try_write(answer);
}

/// A complete HTTP/1.1 503 with the house error body naming `rule`.
fn canned_503(rule: &str, message: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "error": {"rule": rule, "message": message, "category": "resource"}
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Accept errors: a connection reset before it was accepted is nothing; anything else
/// (out of file descriptors, most likely) is logged and the loop waits a second, as
/// `axum::serve` does, instead of spinning.
async fn accept_error(e: &std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The soft open-file limit of this process (`ulimit -n`), where the platform says
/// (Linux: `/proc/self/limits`); `None` when unknown or unlimited.
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `server.max_connections`, lowered (with a warning) so that connections at the cap
/// leave [`RESERVED_FDS`] descriptors under the open-file limit: past that limit
/// `accept` itself fails and nothing, `/health` included, is answered.
fn fit_open_file_limit(configured: usize, limit: Option<usize>) -> usize {
    let Some(limit) = limit else {
        return configured;
    };
    let room = limit.saturating_sub(RESERVED_FDS).max(1);
    if configured <= room {
        return configured;
    }
    tracing::warn!(
        rule = "max_connections",
        configured,
        effective = room,
        open_file_limit = limit,
        "server.max_connections is above what the open-file limit leaves room for; \
         capping connections lower (raise the limit: LimitNOFILE= in the systemd unit)"
    );
    room
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gate_holds_both_caps_and_gives_slots_back() {
        let gate = Gate::new(3, 2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let a1 = gate.try_enter(Some(a)).unwrap();
        let _a2 = gate.try_enter(Some(a)).unwrap();
        assert_eq!(gate.try_enter(Some(a)).unwrap_err(), Full::PerIp);
        let _b1 = gate.try_enter(Some(b)).unwrap();
        assert_eq!(gate.try_enter(Some(b)).unwrap_err(), Full::Total);
        assert_eq!(gate.try_enter(None).unwrap_err(), Full::Total);
        drop(a1);
        assert_eq!(gate.open(), 2);
        let _a3 = gate.try_enter(Some(a)).unwrap();
        drop(_a3);
        drop(_a2);
        drop(_b1);
        assert_eq!(gate.open(), 0);
        assert!(
            gate.count.lock().unwrap().per_ip.is_empty(),
            "no entry kept for IPs with nothing open"
        );
    }

    #[test]
    fn the_connection_cap_fits_under_the_open_file_limit() {
        assert_eq!(fit_open_file_limit(4096, None), 4096);
        assert_eq!(fit_open_file_limit(4096, Some(65_536)), 4096);
        assert_eq!(fit_open_file_limit(4096, Some(1024)), 1024 - RESERVED_FDS);
        assert_eq!(fit_open_file_limit(4096, Some(10)), 1);
    }

    #[test]
    fn the_canned_answers_are_complete_http_responses() {
        for body in [
            canned_503("max_connections", "m"),
            canned_503("max_connections_per_ip", "a \"quoted\" message"),
        ] {
            let text = std::str::from_utf8(&body).unwrap();
            let (head, json) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(len, json.len(), "{text}");
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            assert!(
                v["error"]["rule"]
                    .as_str()
                    .unwrap()
                    .starts_with("max_connections")
            );
        }
    }
}
