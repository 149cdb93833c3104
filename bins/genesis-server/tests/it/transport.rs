//! Audit D4 (transport): the server served with `genesis_server::serve` on loopback,
//! as `main.rs` serves it — header timeout, connection caps, the client IP behind a
//! trusted proxy, per-key rate limits, bounded metric labels, credential header
//! parsing and the event-stream caps. Caps are configured small so each test opens a
//! handful of sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use genesis::GenesisConfig;
use genesis::core::Secret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Stub, TempDir, TestServer, config, error_rule, split};

/// The app of a [`TestServer`] (which installs the process's one Prometheus recorder,
/// so `/metrics` answers) served a second time, on its own listener, by
/// `genesis_server::serve`: the transport under test.
struct Served {
    addr: SocketAddr,
    base: String,
    server: TestServer,
    _dir: TempDir,
}

impl Served {
    async fn start(tag: &str, edit: impl FnOnce(&mut GenesisConfig)) -> Served {
        Self::start_with(tag, Duration::ZERO, edit).await
    }

    async fn start_with(
        tag: &str,
        agent_delay: Duration,
        edit: impl FnOnce(&mut GenesisConfig),
    ) -> Served {
        let dir = TempDir::new(tag);
        let stub = Stub::start(agent_delay).await;
        let mut c = config(dir.path(), &stub.url);
        edit(&mut c);
        let server = TestServer::start(c, &[]).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(genesis_server::serve(
            listener,
            Arc::clone(&server.state),
            std::future::pending(),
        ));
        Served {
            addr,
            base: format!("http://{addr}"),
            server,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `/metrics`, read through the test server's own (uncapped) listener.
    async fn metrics(&self) -> String {
        let (status, _, body) = self.server.get("/metrics").await;
        assert_eq!(status, 200);
        body.as_str().unwrap().to_owned()
    }
}

/// The value of one exact series line (`name{labels}`), 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Sends `GET path` on `stream` (kept alive) and reads the whole answer.
async fn get_on(stream: &mut TcpStream, path: &str) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("no answer within 5 s")
            .unwrap();
        assert!(n > 0, "closed before the answer was complete");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if body.len() >= len {
                return text.into_owned();
            }
        }
    }
}

/// Reads until the server closes the connection (EOF or reset) and returns what it
/// sent and when it closed; panics if it is still open after `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + within).into(), stream.read(&mut chunk)).await {
            Err(_) => panic!(
                "connection still open after {within:?} (received {:?})",
                String::from_utf8_lossy(&buf)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&buf).into_owned(),
                    started.elapsed(),
                );
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Finding 1 (slowloris): a connection that sends nothing, one idle after a request
/// on keep-alive, and one dripping a header a byte at a time all stayed open 80 s+.
/// Each is now closed once `server.header_timeout` has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_idle_and_dripping_connections_are_closed_after_the_header_timeout() {
    let s = Served::start("header-timeout", |c| {
        c.server.header_timeout = Duration::from_millis(800);
    })
    .await;
    let addr = s.addr;
    let silent = tokio::spawn(async move {
        let mut c = TcpStream::connect(addr).await.unwrap();
        read_until_closed(&mut c, Duration::from_secs(5)).await.1
    });
    let idle = tokio::spawn(async move {
        let mut c = TcpStream::connect(addr).await.unwrap();
        let answer = get_on(&mut c, "/health").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        read_until_closed(&mut c, Duration::from_secs(5)).await.1
    });
    let drip = tokio::spawn(async move {
        let mut c = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        let request = b"GET /health HTTP/1.1\r\nhost: t\r\nx-pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let mut one = [0u8; 1];
        for byte in request.iter().cycle() {
            if c.write_all(&[*byte]).await.is_err() {
                break;
            }
            match tokio::time::timeout(Duration::from_millis(100), c.read(&mut one)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) | Err(_) => {}
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "a connection dripping header bytes was still open after 5 s"
            );
        }
        started.elapsed()
    });
    for (what, task) in [
        ("silent", silent),
        ("idle keep-alive", idle),
        ("drip", drip),
    ] {
        let closed_after = task.await.unwrap();
        assert!(
            closed_after >= Duration::from_millis(600),
            "{what}: closed after {closed_after:?}, before the header timeout"
        );
    }
    // The server still answers.
    let mut c = TcpStream::connect(addr).await.unwrap();
    assert!(get_on(&mut c, "/health").await.starts_with("HTTP/1.1 200"));
}

/// Opens `n` connections to `addr`, each with a request in flight ([`mid_request`]),
/// so the server can evict none of them.
async fn hold(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    hold_with(addr, n, None).await
}

/// [`hold`], the requests sent with API key `key`.
async fn hold_with(addr: SocketAddr, n: usize, key: Option<&str>) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        let mut c = TcpStream::connect(addr).await.unwrap();
        start_request_with(&mut c, key).await;
        held.push(c);
    }
    held
}

/// A connection that had one request answered and now idles on keep-alive.
async fn idle_connection(addr: SocketAddr) -> TcpStream {
    let mut c = TcpStream::connect(addr).await.unwrap();
    let answer = get_on(&mut c, "/health").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    c
}

/// A connection over a cap gets the canned 503 naming `rule` (or, if the client
/// raced it, a reset) and is closed at once.
async fn assert_refused(addr: SocketAddr, rule: &str) {
    let mut c = TcpStream::connect(addr).await.unwrap();
    let (answer, after) = read_until_closed(&mut c, Duration::from_secs(3)).await;
    assert!(
        after < Duration::from_secs(2),
        "a connection over the cap stayed open {after:?}"
    );
    if !answer.is_empty() {
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains(&format!("\"rule\":\"{rule}\"")), "{answer}");
        // The message names the cap's value (audit P9 F6).
        let named = format!("server.{rule} ");
        assert!(
            answer
                .split(&named)
                .nth(1)
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit())),
            "the message does not name server.{rule}'s value: {answer}"
        );
        assert!(
            answer.to_ascii_lowercase().contains("retry-after: 1"),
            "{answer}"
        );
    }
}

/// `/health` on a new connection from 127.0.0.1, retried for a moment (a closed
/// connection gives its slot back asynchronously).
async fn health_on_a_new_connection(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut c = TcpStream::connect(addr).await.unwrap();
        if c.write_all(b"GET /health HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .is_ok()
        {
            let mut buf = [0u8; 12];
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf)).await
                && buf[..n].starts_with(b"HTTP/1.1 200")
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "/health not answered after a slot was freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Finding 1 (no cap): held connections reached the fd limit and /health stopped
/// answering. Over `server.max_connections_per_ip` a client is refused at once while
/// other clients are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_ip_cap_are_refused_while_other_clients_are_served() {
    let s = Served::start("per-ip-cap", |c| {
        c.server.max_connections_per_ip = 2;
        c.server.max_connections = 50;
    })
    .await;
    let series = r#"genesis_connections_refused_total{reason="max_connections_per_ip"}"#;
    let before = sample(&s.metrics().await, series);
    let mut held = hold(s.addr, 2).await;
    assert_refused(s.addr, "max_connections_per_ip").await;
    // Loopback is 127.0.0.0/8 on Linux: 127.0.0.2 is another client.
    #[cfg(target_os = "linux")]
    {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut other = socket.connect(s.addr).await.unwrap();
        let answer = get_on(&mut other, "/health").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let after = sample(&s.metrics().await, series);
    assert!(after >= before + 1.0, "{series}: {before} then {after}");
    held.pop();
    health_on_a_new_connection(s.addr).await;
}

/// Finding 1: `server.max_connections` bounds all connections; over it a connection
/// is refused at once, and a freed slot serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_total_cap_are_refused_and_counted() {
    let s = Served::start("total-cap", |c| {
        c.server.max_connections = 2;
        c.server.max_connections_per_ip = 50;
    })
    .await;
    let series = r#"genesis_connections_refused_total{reason="max_connections"}"#;
    let before = sample(&s.metrics().await, series);
    let mut held = hold(s.addr, 2).await;
    assert_refused(s.addr, "max_connections").await;
    assert_refused(s.addr, "max_connections").await;
    let after = sample(&s.metrics().await, series);
    assert!(after >= before + 2.0, "{series}: {before} then {after}");
    held.clear();
    health_on_a_new_connection(s.addr).await;
}

/// Finding 2: the per-IP rate limit keyed on the TCP peer only, so behind a same-host
/// proxy every client shared 127.0.0.1's bucket. With the proxy trusted, the client is
/// the right-most untrusted `X-Forwarded-For` address: a flooding client is limited,
/// another is not, and a forged left-most address changes nothing. Untrusted peers'
/// headers are still ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_per_ip_limit_is_per_forwarded_client() {
    let limits = |c: &mut GenesisConfig| {
        c.security.rate_limits.per_ip_per_minute = 1;
        c.security.rate_limits.per_ip_burst = 3;
    };
    let s = Served::start("trusted-proxy", |c| {
        limits(c);
        c.server.trusted_proxies = vec!["127.0.0.0/8".into()];
        c.server.allow_open_api = true;
    })
    .await;
    let get = |xff: &'static str| {
        let r = s
            .server
            .client
            .get(s.url("/api/tasks"))
            .header("x-forwarded-for", xff);
        async move { r.send().await.unwrap().status().as_u16() }
    };
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(get("10.0.0.66").await);
    }
    assert_eq!(codes, [200, 200, 200, 429, 429]);
    assert_eq!(
        get("10.0.0.7").await,
        200,
        "another client behind the proxy"
    );
    // The proxy appends what it saw: a forged left-most address is not read.
    assert_eq!(get("10.0.0.8, 10.0.0.66").await, 429);
    // Forwarded (RFC 7239) works the same way.
    let r = s
        .server
        .client
        .get(s.url("/api/tasks"))
        .header("forwarded", "for=10.0.0.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let untrusted = Served::start("untrusted-proxy", limits).await;
    let mut codes = Vec::new();
    for xff in ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"] {
        let r = untrusted
            .server
            .client
            .get(untrusted.url("/api/tasks"))
            .header("x-forwarded-for", xff)
            .send()
            .await
            .unwrap();
        codes.push(r.status().as_u16());
    }
    assert_eq!(
        codes,
        [200, 200, 200, 429],
        "an untrusted peer's headers are ignored"
    );
}

/// An IPv6 client has a /64 of its own (2^64 addresses): counted per address, it could
/// take a fresh rate-limit bucket for every request. Addresses of one /64 share one
/// bucket; the next /64 is another client; IPv4 keeps whole addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_are_rate_limited_per_64_network() {
    let s = Served::start("ipv6-network", |c| {
        c.security.rate_limits.per_ip_per_minute = 1;
        c.security.rate_limits.per_ip_burst = 3;
        c.server.trusted_proxies = vec!["127.0.0.0/8".into()];
        c.server.allow_open_api = true;
    })
    .await;
    let get = |xff: String| {
        let r = s
            .server
            .client
            .get(s.url("/api/tasks"))
            .header("x-forwarded-for", xff);
        async move { r.send().await.unwrap() }
    };
    let mut codes = Vec::new();
    for i in 1..=5 {
        codes.push(get(format!("2001:db8:1:2::{i:x}")).await.status().as_u16());
    }
    assert_eq!(codes, [200, 200, 200, 429, 429], "one /64, five addresses");
    let limited = get("2001:db8:1:2:ffff::1".into()).await;
    assert_eq!(limited.status(), 429);
    let body: serde_json::Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["rule"], "rate_limit:client_ip", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("2001:db8:1:2::/64"), "{message}");
    assert_eq!(
        get("2001:db8:1:3::1".into()).await.status(),
        200,
        "the next /64 is another client"
    );
    // IPv4 addresses are not grouped.
    for i in 1..=4 {
        assert_eq!(get(format!("10.9.9.{i}")).await.status(), 200);
    }
}

/// Finding 2: an anonymous flood spent the per-IP bucket before auth ran, locking out
/// key holders on the same IP (or behind the same proxy). A request with a valid key
/// now counts against its key only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_flood_does_not_lock_out_a_valid_api_key_on_the_same_ip() {
    let s = Served::start("per-key", |c| {
        c.server.api_keys = vec![Secret::new("key-alice-0000000000000000")];
        c.security.rate_limits.per_ip_per_minute = 1;
        c.security.rate_limits.per_ip_burst = 3;
    })
    .await;
    let client = &s.server.client;
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(
            client
                .get(s.url("/api/tasks"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(codes, [401, 401, 401, 429, 429]);
    let wrong = client
        .get(s.url("/api/tasks"))
        .bearer_auth("key-mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 429, "wrong keys stay limited per IP");
    let (status, _, body) = split(
        client
            .get(s.url("/api/tasks"))
            .bearer_auth("key-alice-0000000000000000")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Finding 4a/4b: `bearer` / `BEARER` were "missing credentials"; two `Authorization`
/// (or `x-api-key`) headers were accepted, the first winning. The scheme is now
/// case-insensitive and a duplicated credential header is 400 `ambiguous_credentials`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive_and_duplicate_credentials_are_refused() {
    const KEY: &str = "key-alice-0000000000000000";
    let s = Served::start("auth-headers", |c| {
        c.server.api_keys = vec![Secret::new(KEY)];
    })
    .await;
    let client = &s.server.client;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let (status, _, body) = split(
            client
                .get(s.url("/api/tasks"))
                .header("authorization", format!("{scheme} {KEY}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{scheme}: {body}");
    }
    for (name, first, second) in [
        (
            "authorization",
            format!("Bearer {KEY}"),
            "Bearer other".to_owned(),
        ),
        ("x-api-key", KEY.to_owned(), "other".to_owned()),
    ] {
        let (status, _, body) = split(
            client
                .get(s.url("/api/tasks"))
                .header(name, first)
                .header(name, second)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 400, "{name} twice: {body}");
        assert_eq!(error_rule(&body), "ambiguous_credentials");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(name),
            "{body}"
        );
    }
    // Audit O11 H5: a valid key in one header and another key in the other was
    // authenticated as the x-api-key one; the same key in both is fine.
    for (other, want) in [("key-mallory-000000000000000", 400), (KEY, 200)] {
        let (status, _, body) = split(
            client
                .get(s.url("/api/tasks"))
                .header("authorization", format!("Bearer {KEY}"))
                .header("x-api-key", other)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, want, "{other}: {body}");
        if want == 400 {
            assert_eq!(error_rule(&body), "ambiguous_credentials");
        }
    }
}

/// Finding 3: an unmatched path was recorded verbatim as the `endpoint` label: every
/// random 404 a new series kept for ever, and secrets in paths exported by /metrics.
/// Labels are now route templates, and one `unmatched` for 404s and 405s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_labels_are_route_templates_and_unmatched_paths_share_one_label() {
    let s = Served::start("labels", |_| {}).await;
    let client = &s.server.client;
    let marker = format!("nope-ghp_SECRET{}", std::process::id());
    for i in 0..20 {
        let r = client
            .get(s.url(&format!("/{marker}-{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    let r = client
        .get(s.url(&format!("/api/tasks/{marker}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "unknown run");
    let r = client
        .delete(s.url(&format!("/api/tasks/{marker}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let text = s.metrics().await;
    assert!(
        !text.contains(&marker),
        "a request path is exported by /metrics"
    );
    assert!(
        text.contains(r#"genesis_requests_total{endpoint="unmatched",status="404"}"#),
        "no unmatched 404 series"
    );
    assert!(
        text.contains(r#"genesis_requests_total{endpoint="unmatched",status="405"}"#),
        "no unmatched 405 series"
    );
    assert!(
        text.contains(r#"genesis_requests_total{endpoint="/api/tasks/{id}",status="404"}"#),
        "a matched route is labelled by its template"
    );
}

/// Finding 4c: event streams had no cap per client or in total and no lifetime. Over
/// `server.max_event_streams_per_ip` a client gets 429, over `server.max_event_streams`
/// 503, both with Retry-After; a closed stream frees its slot; and a stream ends after
/// `server.event_stream_lifetime`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_capped_per_ip_and_in_total_and_end_after_their_lifetime() {
    let s = Served::start_with("sse", Duration::from_secs(5), |c| {
        c.server.max_event_streams_per_ip = 1;
        c.server.max_event_streams = 2;
        c.server.trusted_proxies = vec!["127.0.0.1".into()];
        c.server.allow_open_api = true;
        c.server.event_stream_lifetime = Duration::from_millis(1500);
    })
    .await;
    // The run waits on its slow agent, so its stream stays open.
    let run = s.server.submit("Fix the login bug").await;
    let events = s.url(&format!("/api/tasks/{run}/events"));
    let open = |client_ip: &'static str| {
        let r = s
            .server
            .client
            .get(&events)
            .header("x-forwarded-for", client_ip);
        async move { r.send().await.unwrap() }
    };
    let started = Instant::now();
    let first = open("10.0.0.1").await;
    assert_eq!(first.status(), 200);
    let (status, headers, body) = split(open("10.0.0.1").await).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(error_rule(&body), "max_event_streams_per_ip");
    assert!(headers.contains_key("retry-after"));
    let second = open("10.0.0.2").await;
    assert_eq!(second.status(), 200);
    let (status, headers, body) = split(open("10.0.0.3").await).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(error_rule(&body), "max_event_streams");
    assert!(headers.contains_key("retry-after"));
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(2);
    let third = loop {
        let r = open("10.0.0.3").await;
        if r.status() == 200 {
            break r;
        }
        assert!(Instant::now() < deadline, "a closed stream kept its slot");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(third);
    // The first stream ends by itself at its lifetime, long before the run does.
    let text = tokio::time::timeout(Duration::from_secs(4), first.text())
        .await
        .expect("the event stream outlived server.event_stream_lifetime")
        .unwrap();
    assert!(text.contains("data:"), "{text}");
    assert!(started.elapsed() >= Duration::from_millis(1400));
}

/// Audit S6 D4: the stream caps were per IP and in total only, so one key opened every
/// stream from a few addresses and locked every other tenant out. Over
/// `server.max_event_streams_per_subject` a caller's streams get 429 from any IP, while
/// other callers still get theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_capped_per_caller_from_any_ip() {
    let s = Served::start_with("sse-subject", Duration::from_secs(5), |c| {
        c.server.max_event_streams_per_subject = 1;
        c.server.trusted_proxies = vec!["127.0.0.1".into()];
        c.server.allow_open_api = true;
    })
    .await;
    let run = s.server.submit("Fix the login bug").await;
    let events = s.url(&format!("/api/tasks/{run}/events"));
    // The API is open (no keys configured): a key only names the caller's subject.
    let open = |key: &'static str, client_ip: &'static str| {
        let r = s
            .server
            .client
            .get(&events)
            .header("x-api-key", key)
            .header("x-forwarded-for", client_ip);
        async move { r.send().await.unwrap() }
    };
    let first = open("alice", "10.0.0.1").await;
    assert_eq!(first.status(), 200);
    let (status, headers, body) = split(open("alice", "10.0.0.2").await).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(error_rule(&body), "max_event_streams_per_subject");
    assert!(headers.contains_key("retry-after"));
    let bob = open("bob", "10.0.0.3").await;
    assert_eq!(bob.status(), 200, "another caller keeps its streams");
    // Callers without credentials share the subject `anonymous`: they are held to the
    // per-IP cap, not to one cap for all of them (verification V6).
    let anonymous = |client_ip: &'static str| {
        let r = s
            .server
            .client
            .get(&events)
            .header("x-forwarded-for", client_ip);
        async move { r.send().await.unwrap() }
    };
    let a1 = anonymous("10.0.0.4").await;
    let a2 = anonymous("10.0.0.5").await;
    assert_eq!((a1.status().as_u16(), a2.status().as_u16()), (200, 200));
    drop((a1, a2));
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let r = open("alice", "10.0.0.2").await;
        if r.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a closed stream kept its subject's slot"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ------------------------------------------------------------------ audit S10 finding 1
// 17 source IPs x 250 connections dripping header bytes and reconnecting kept
// `server.max_connections` full: /health, /ready and authenticated clients got 503 for
// the whole attack, and nothing was logged.

/// A connection from `ip` (any loopback address on Linux; else 127.0.0.1).
async fn connect_from(ip: [u8; 4], addr: SocketAddr) -> TcpStream {
    #[cfg(target_os = "linux")]
    {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::from((ip, 0)))
            .unwrap_or_else(|e| panic!("binding {ip:?}: {e}"));
        socket.connect(addr).await.unwrap()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = ip;
        TcpStream::connect(addr).await.unwrap()
    }
}

/// A connection that has sent part of a request head (a slowloris drip).
async fn dripping(ip: [u8; 4], addr: SocketAddr) -> TcpStream {
    let mut c = connect_from(ip, addr).await;
    c.write_all(b"GET /health HTTP/1.1\r\nhost: t\r\nx-a: aaa")
        .await
        .unwrap();
    c
}

/// A request in flight: a POST whose head the server has read (it answered
/// `100 Continue` when the handler started reading the body), with half its body sent.
/// Returns the connection and the rest of the body.
async fn mid_request(addr: SocketAddr) -> (TcpStream, Vec<u8>) {
    let mut c = TcpStream::connect(addr).await.unwrap();
    let rest = start_request(&mut c).await;
    (c, rest)
}

/// Starts [`mid_request`]'s request on the open connection `c`; the rest of its body.
async fn start_request(c: &mut TcpStream) -> Vec<u8> {
    start_request_with(c, None).await
}

/// [`start_request`] with API key `key`.
async fn start_request_with(c: &mut TcpStream, key: Option<&str>) -> Vec<u8> {
    let body = br#"{"description":"Fix the login bug","mode":"plan"}"#;
    let auth = key.map_or(String::new(), |k| format!("authorization: Bearer {k}\r\n"));
    c.write_all(
        format!(
            "POST /api/tasks HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
             {auth}expect: 100-continue\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .expect("no 100 Continue within 5 s")
        .unwrap();
    let got = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(got.starts_with("HTTP/1.1 100"), "{got}");
    let (first, rest) = body.split_at(body.len() / 2);
    c.write_all(first).await.unwrap();
    rest.to_vec()
}

/// Sends the rest of [`mid_request`]'s body and returns the status line of the answer.
async fn finish_request(c: &mut TcpStream, rest: &[u8]) -> String {
    c.write_all(rest).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut chunk))
            .await
            .expect("no answer within 5 s")
            .unwrap();
        assert!(
            n > 0,
            "the request in flight was cut: closed without an answer"
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    text.lines().next().unwrap_or_default().to_owned()
}

/// `GET /health` on a new connection from `ip`, sent at once: the status line.
async fn health_from(ip: [u8; 4], addr: SocketAddr) -> (TcpStream, String) {
    let mut c = connect_from(ip, addr).await;
    let answer = get_on(&mut c, "/health").await;
    let status = answer.lines().next().unwrap_or_default().to_owned();
    (c, status)
}

/// At `server.max_connections`, full of connections that sent nothing or part of a
/// head, plus one idle after a request and one mid-request: a client sending `GET
/// /health` at once gets 200, the oldest connection without a complete head is closed
/// (counted in `genesis_connections_evicted_total`), then the other; then the
/// connection idle the longest (verification V10 defect 1: a served connection was
/// never evicted, so a flood that sent one request per connection held every slot);
/// the mid-request one never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_total_cap_the_oldest_connection_without_a_request_makes_room() {
    let s = Served::start("evict-total", |c| {
        c.server.max_connections = 4;
        c.server.max_connections_per_ip = 50;
    })
    .await;
    let evicted = r#"genesis_connections_evicted_total{reason="max_connections"}"#;
    let refused = r#"genesis_connections_refused_total{reason="max_connections"}"#;
    let m = s.metrics().await;
    let (evicted_before, refused_before) = (sample(&m, evicted), sample(&m, refused));
    let mut idle = idle_connection(s.addr).await;
    let (mut in_flight, rest) = mid_request(s.addr).await;
    let mut silent = TcpStream::connect(s.addr).await.unwrap();
    let mut drip = dripping([127, 0, 0, 1], s.addr).await;
    // The cap is full (4 open): a client sending its request at once is served.
    let (_d, status) = health_from([127, 0, 0, 1], s.addr).await;
    assert!(status.starts_with("HTTP/1.1 200"), "at the cap: {status}");
    let (_, after) = read_until_closed(&mut silent, Duration::from_secs(3)).await;
    assert!(after < Duration::from_secs(2), "evicted after {after:?}");
    // Then the drip, now the oldest without a request.
    let (_f, status) = health_from([127, 0, 0, 1], s.addr).await;
    assert!(status.starts_with("HTTP/1.1 200"), "at the cap: {status}");
    read_until_closed(&mut drip, Duration::from_secs(3)).await;
    // No fresh connection left: the one idle the longest goes (not the newer idle ones).
    let (_g, status) = health_from([127, 0, 0, 1], s.addr).await;
    assert!(status.starts_with("HTTP/1.1 200"), "at the cap: {status}");
    let (_, after) = read_until_closed(&mut idle, Duration::from_secs(3)).await;
    assert!(after < Duration::from_secs(2), "evicted after {after:?}");
    // Every connection busy: refused.
    let (mut d, mut f, mut g) = (_d, _f, _g);
    for c in [&mut d, &mut f, &mut g] {
        start_request(c).await;
    }
    assert_refused(s.addr, "max_connections").await;
    // The in-flight connection was never cut.
    let status = finish_request(&mut in_flight, &rest).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let m = s.metrics().await;
    // The metric is the process's: other tests running at once add to it.
    assert!(sample(&m, evicted) >= evicted_before + 3.0, "{evicted}");
    assert!(sample(&m, refused) > refused_before, "{refused}");
}

/// At `server.max_connections_per_ip`, a new connection from that IP evicts that IP's
/// oldest connection without a request, never another IP's (even an older one).
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_per_ip_cap_only_that_ips_connections_are_evicted() {
    let s = Served::start("evict-per-ip", |c| {
        c.server.max_connections = 50;
        c.server.max_connections_per_ip = 3;
    })
    .await;
    let series = r#"genesis_connections_evicted_total{reason="max_connections_per_ip"}"#;
    let before = sample(&s.metrics().await, series);
    let (a, b) = ([127, 0, 0, 11], [127, 0, 0, 12]);
    // b's silent connection is the oldest of all.
    let mut other = connect_from(b, s.addr).await;
    let mut old = connect_from(a, s.addr).await;
    let mut drip = dripping(a, s.addr).await;
    let mut served = connect_from(a, s.addr).await;
    assert!(
        get_on(&mut served, "/health")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let (_x, status) = health_from(a, s.addr).await;
    assert!(
        status.starts_with("HTTP/1.1 200"),
        "at the per-IP cap: {status}"
    );
    read_until_closed(&mut old, Duration::from_secs(3)).await;
    let (_y, status) = health_from(a, s.addr).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    read_until_closed(&mut drip, Duration::from_secs(3)).await;
    // a's 3 connections are idle: the one idle the longest (served) goes.
    let (_z, status) = health_from(a, s.addr).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    read_until_closed(&mut served, Duration::from_secs(3)).await;
    // b's connection was not touched and is served when it sends its request.
    assert!(
        get_on(&mut other, "/health")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        sample(&s.metrics().await, series) >= before + 2.0,
        "{series}"
    );
}

/// A flood of refused and of evicted connections is one `warn` line per cap and kind
/// (naming the rule and the cap's value, with the count), not one line per connection;
/// before, nothing was logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_evictions_are_logged_once_per_interval_with_the_cap() {
    crate::logs::log_lines();
    // A cap no other test uses, to pick out this test's lines.
    const CAP: usize = 7;
    let s = Served::start("conn-log", |c| {
        c.server.max_connections = CAP;
        c.server.max_connections_per_ip = 50;
    })
    .await;
    let refused = r#"genesis_connections_refused_total{reason="max_connections"}"#;
    let evicted = r#"genesis_connections_evicted_total{reason="max_connections"}"#;
    let m = s.metrics().await;
    let (refused_before, evicted_before) = (sample(&m, refused), sample(&m, evicted));
    let mut held = hold(s.addr, CAP - 1).await;
    // The last slot: each new silent connection evicts the one before.
    let mut silent = Vec::new();
    for _ in 0..12 {
        silent.push(TcpStream::connect(s.addr).await.unwrap());
    }
    for c in &mut silent[..11] {
        read_until_closed(c, Duration::from_secs(3)).await;
    }
    // Fill it with a served connection: now every new one is refused.
    held.extend(hold(s.addr, 1).await);
    read_until_closed(&mut silent[11], Duration::from_secs(3)).await;
    for _ in 0..20 {
        assert_refused(s.addr, "max_connections").await;
    }
    let m = s.metrics().await;
    // The metrics are the process's: other tests running at once add to them.
    assert!(sample(&m, evicted) >= evicted_before + 12.0, "{evicted}");
    assert!(sample(&m, refused) >= refused_before + 20.0, "{refused}");
    let lines = crate::logs::log_lines();
    let ours = |message: &str| -> Vec<serde_json::Value> {
        lines
            .iter()
            .filter(|l| {
                l["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(message))
                    && l["fields"]["cap"] == CAP
            })
            .cloned()
            .collect()
    };
    for (message, kind) in [
        ("connections refused", "refusals"),
        ("connections evicted", "evictions"),
    ] {
        let found = ours(message);
        assert_eq!(found.len(), 1, "{kind}: {found:?}");
        let line = &found[0];
        assert_eq!(line["level"], "WARN", "{line}");
        assert_eq!(line["fields"]["rule"], "max_connections", "{line}");
        assert_eq!(line["fields"]["listener"], "main", "{line}");
        assert_eq!(line["fields"]["count"], 1, "{line}");
        assert_eq!(line["fields"]["interval_secs"], 10, "{line}");
    }
}

/// `serve_ops` on its own listener for the app of `s`; resolves `stop` to shut it down.
fn ops_for(
    s: &Served,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(genesis_server::serve_ops(
        listener,
        Arc::clone(&s.server.state),
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, stop, task)
}

/// `server.ops_bind`: with the main listener's caps full of connections serving
/// requests (so /health there is refused), the operations listener answers `/health`,
/// `/ready` and `/metrics` as the main port does, without credentials and outside the
/// main caps; everything else is 404 there; it evicts like the main listener at its own
/// cap; and it shuts down gracefully.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ops_listener_answers_probes_while_the_main_caps_are_full() {
    let s = Served::start("ops", |c| {
        c.server.max_connections = 2;
        c.server.api_keys = vec![Secret::new("key-alice-0000000000000000")];
    })
    .await;
    let (ops, stop, task) = ops_for(&s);
    let _held = hold_with(s.addr, 2, Some("key-alice-0000000000000000")).await;
    assert_refused(s.addr, "max_connections").await;
    let client = &s.server.client;
    for path in ["/health", "/ready", "/metrics"] {
        let (status, _, body) = split(
            client
                .get(format!("http://{ops}{path}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{path}: {body}");
        if path == "/metrics" {
            assert!(
                body.as_str().unwrap().contains("genesis_connections_open"),
                "{body}"
            );
        } else {
            let (main_status, _, main_body) = s.server.get(path).await;
            assert_eq!(main_status, 200);
            assert_eq!(
                body.as_object().map(|o| o.keys().collect::<Vec<_>>()),
                main_body.as_object().map(|o| o.keys().collect::<Vec<_>>()),
                "{path}: the same answer as the main port"
            );
        }
    }
    for path in ["/api/tasks", "/openapi.json", "/api/status"] {
        let r = client
            .get(format!("http://{ops}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path} is not served on the ops listener");
    }
    // Its own cap: full of silent connections, a probe still gets through.
    let mut silent = Vec::new();
    for _ in 0..genesis_server::OPS_MAX_CONNECTIONS {
        silent.push(TcpStream::connect(ops).await.unwrap());
    }
    let (_p, status) = health_from([127, 0, 0, 1], ops).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    read_until_closed(&mut silent[0], Duration::from_secs(3)).await;
    drop(silent);
    // Graceful shutdown: the listener closes and serve_ops returns.
    let mut idle = TcpStream::connect(ops).await.unwrap();
    assert!(
        get_on(&mut idle, "/health")
            .await
            .starts_with("HTTP/1.1 200")
    );
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("serve_ops still running 5 s after its shutdown")
        .unwrap();
    read_until_closed(&mut idle, Duration::from_secs(1)).await;
    assert!(TcpStream::connect(ops).await.is_err(), "still accepting");
}

/// `server.ops_bind` on `server.bind`'s port is refused at start, naming the rule and
/// both values, before the data directory is created.
#[test]
fn an_ops_bind_equal_to_bind_is_refused_at_start() {
    let dir = TempDir::new("ops-bind-same");
    let config = dir.path().join("genesis.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &config,
        format!(
            "[server]\nbind = \"127.0.0.1:18931\"\nops_bind = \"127.0.0.1:18931\"\ndata_dir = \"{}\"\n",
            data.display()
        ),
    )
    .unwrap();
    let mut cmd = crate::support::server_command(dir.path());
    cmd.arg("--config").arg(&config);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rule: ops_bind")
            && err.contains("server.ops_bind 127.0.0.1:18931 overlaps server.bind 127.0.0.1:18931"),
        "{err}"
    );
    assert!(!data.exists(), "the data directory was created");
}
