//! The http source against a tiny HTTP/1.1 server that the test runs on 127.0.0.1:0: a snapshot, an
//! error status, a body over the size cap (declared or not), a server that never answers, and the
//! interval loop.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use edge_change::capture::CaptureData;
use edge_change::shutdown::Shutdown;
use edge_change::sources::http::{self, HttpSettings};
use edge_change::sources::SourceStats;
use tokio::sync::mpsc;

use crate::harness::{failure, next, png};

/// Serves forever on a free loopback port, one thread per connection; returns the base URL.
fn serve(image: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let image = image.clone();
            std::thread::spawn(move || respond(stream, &image));
        }
    });
    base
}

fn respond(mut stream: TcpStream, image: &[u8]) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // Skip the headers up to the blank line.
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let head = |status: &str, length: Option<usize>| {
        let length = length.map(|l| format!("Content-Length: {l}\r\n")).unwrap_or_default();
        format!("HTTP/1.1 {status}\r\n{length}Content-Type: image/png\r\nConnection: close\r\n\r\n")
    };
    let _ = match path.as_str() {
        "/snapshot.png" => stream
            .write_all(head("200 OK", Some(image.len())).as_bytes())
            .and_then(|_| stream.write_all(image)),
        "/big-declared" => stream.write_all(head("200 OK", Some(5000)).as_bytes()),
        "/big-streamed" => stream
            .write_all(head("200 OK", None).as_bytes())
            .and_then(|_| stream.write_all(&[7u8; 5000])),
        "/empty" => stream.write_all(head("200 OK", Some(0)).as_bytes()),
        "/hang" => {
            // Answers nothing; the connection closes when the client gives up (bounded anyway).
            let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
            let _ = reader.read_line(&mut line);
            Ok(())
        }
        _ => stream.write_all(head("404 Not Found", Some(0)).as_bytes()),
    };
}

fn settings(url: String, timeout: Duration) -> HttpSettings {
    HttpSettings {
        source: "gate".into(),
        url,
        interval: Duration::from_millis(100),
        timeout,
        max_bytes: 1000,
    }
}

async fn take(settings: &HttpSettings) -> CaptureData {
    http::take(&http::agent(settings), settings).await
}

#[tokio::test]
async fn a_snapshot_is_fetched() {
    let image = png(9);
    let base = serve(image.clone());
    let s = settings(format!("{base}/snapshot.png"), Duration::from_secs(10));
    assert_eq!(take(&s).await, CaptureData::Bytes(image));
}

#[tokio::test]
async fn status_size_and_empty_bodies_are_failures_naming_the_url() {
    let base = serve(png(1));
    let cases = [
        ("/missing.png", "HTTP status 404 Not Found"),
        ("/big-declared", "body of 5000 bytes is larger than 1000"),
        ("/big-streamed", "body is larger than 1000 bytes"),
        ("/empty", "empty body"),
    ];
    for (path, expected) in cases {
        let url = format!("{base}{path}");
        let CaptureData::Failed(reason) =
            take(&settings(url.clone(), Duration::from_secs(10))).await
        else {
            panic!("{path} should fail");
        };
        assert_eq!(reason, format!("{url}: {expected}"));
    }
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let base = serve(png(1));
    let started = std::time::Instant::now();
    let s = settings(format!("{base}/hang"), Duration::from_millis(500));
    let CaptureData::Failed(reason) = take(&s).await else { panic!("should time out") };
    assert!(reason.contains("timeout"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn the_source_polls_every_interval_until_shutdown() {
    let image = png(4);
    let base = serve(image.clone());
    let (tx, mut rx) = mpsc::channel(4);
    let stats = Arc::new(SourceStats::default());
    let shutdown = Shutdown::new();
    let url = format!("{base}/snapshot.png");
    let s = HttpSettings { max_bytes: 1 << 20, ..settings(url.clone(), Duration::from_secs(10)) };
    let task = tokio::spawn(http::run(s, tx, stats.clone(), shutdown.clone()));
    for _ in 0..2 {
        let capture = next(&mut rx, Duration::from_secs(10)).await;
        assert_eq!((capture.name.as_str(), capture.site.as_str()), (url.as_str(), "gate"));
        assert_eq!(capture.data, CaptureData::Bytes(image.clone()));
    }
    // A server gone is an error capture, not the end of the source.
    let (tx, mut rx) = mpsc::channel(4);
    let gone = settings("http://127.0.0.1:9/snapshot.png".into(), Duration::from_secs(5));
    let task2 = tokio::spawn(http::run(gone, tx, stats.clone(), shutdown.clone()));
    let failed = next(&mut rx, Duration::from_secs(10)).await;
    assert!(
        failure(&failed).starts_with("http://127.0.0.1:9/snapshot.png: "),
        "{}",
        failure(&failed)
    );
    shutdown.trigger();
    for task in [task, task2] {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("stopped")
            .expect("joined");
    }
    assert!(stats.failures.load(Ordering::Relaxed) >= 1);
}
