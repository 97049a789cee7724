//! A load generator for bench/api: CONNECTIONS keep-alive HTTP/1.1 connections to the API's unix
//! socket, each sending `GET PATH` back to back for SECONDS; prints one line: the connections,
//! the requests answered, the rate and the p50 and p99 latency in milliseconds.
//!
//!   cargo run --release -p corral-api --example api_load -- SOCKET PATH CONNECTIONS SECONDS

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, path, connections, seconds] = args.as_slice() else {
        eprintln!("usage: api_load SOCKET PATH CONNECTIONS SECONDS");
        std::process::exit(2);
    };
    let connections: usize = connections.parse().expect("CONNECTIONS is a number");
    let duration = Duration::from_secs(seconds.parse().expect("SECONDS is a number"));
    let start = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (socket, path) = (socket.clone(), path.clone());
            std::thread::spawn(move || run(&socket, &path, start + duration))
        })
        .collect();
    let mut latencies: Vec<Duration> = workers
        .into_iter()
        .flat_map(|worker| worker.join().expect("a worker"))
        .collect();
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index].as_secs_f64() * 1000.0
    };
    println!(
        "{connections:<12} {:>10} {:>10.0} {:>10.3} {:>10.3}",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        percentile(0.50),
        percentile(0.99)
    );
}

/// Sends requests on one connection until `until`; the latency of each.
fn run(socket: &str, path: &str, until: Instant) -> Vec<Duration> {
    let stream = UnixStream::connect(socket).expect("connect to the API socket");
    let mut writer = stream.try_clone().expect("a second handle");
    let mut reader = BufReader::new(stream);
    let request = format!("GET {path} HTTP/1.1\r\nHost: corral\r\n\r\n");
    let mut latencies = Vec::new();
    let mut body = Vec::new();
    while Instant::now() < until {
        let sent = Instant::now();
        writer.write_all(request.as_bytes()).expect("send");
        let mut length = None;
        let mut line = String::new();
        let mut status = String::new();
        loop {
            line.clear();
            reader.read_line(&mut line).expect("a header line");
            if status.is_empty() {
                status = line.clone();
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse::<usize>().ok();
                }
            }
        }
        assert!(status.contains(" 200 "), "answered {status:?}");
        body.resize(length.expect("a Content-Length"), 0);
        reader.read_exact(&mut body).expect("the body");
        latencies.push(sent.elapsed());
    }
    latencies
}
