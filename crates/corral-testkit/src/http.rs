//! A minimal HTTP/1.1 client over a unix socket for the API tests: one request per connection
//! (`Connection: close`), the answer's status and body.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Sends `METHOD PATH` with `body` (JSON) to the server on `socket`; returns the status code
/// and the body. Panics on a malformed answer (a test failure).
pub fn request(socket: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let body = body.unwrap_or_default().as_bytes();
    let (status, answer) = request_bytes(socket, method, path, "application/json", body);
    (status, String::from_utf8(answer).expect("a UTF-8 answer"))
}

/// Sends `METHOD PATH` with `body` of `content_type`; returns the status code and the body's
/// bytes.
pub fn request_bytes(
    socket: &Path,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut stream = UnixStream::connect(socket)
        .unwrap_or_else(|err| panic!("cannot connect to {}: {err}", socket.display()));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: corral\r\nConnection: close\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    // A server that refuses a request early (a body too large) may close before reading it
    // all: its answer is still there to read.
    if let Err(err) = stream.write_all(body) {
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::BrokenPipe,
            "sending the body: {err}"
        );
    }
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let end = (answer.windows(4).position(|window| window == b"\r\n\r\n")).unwrap_or_else(|| {
        panic!(
            "no end of headers in {:?}",
            String::from_utf8_lossy(&answer)
        )
    });
    let head = String::from_utf8_lossy(&answer[..end]).into_owned();
    let content = &answer[end + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let chunked = head
        .lines()
        .any(|line| line.eq_ignore_ascii_case("transfer-encoding: chunked"));
    (
        status,
        if chunked {
            unchunk(content)
        } else {
            content.to_vec()
        },
    )
}

/// The body of a chunked answer.
fn unchunk(mut content: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end =
            (content.windows(2).position(|window| window == b"\r\n")).expect("a chunk size line");
        let size = std::str::from_utf8(&content[..line_end]).expect("a chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("a hexadecimal chunk size");
        if size == 0 {
            return body;
        }
        let rest = &content[line_end + 2..];
        body.extend_from_slice(&rest[..size]);
        content = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_chunked_body_is_joined() {
        assert_eq!(
            super::unchunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
            b"abcde"
        );
    }
}
