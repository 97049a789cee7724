//! A minimal HTTP/1.1 client over a unix socket for the API tests: one request per connection
//! (`Connection: close`), the answer's status and body.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Sends `METHOD PATH` with `body` (JSON) to the server on `socket`; returns the status code
/// and the body. Panics on a malformed answer (a test failure).
pub fn request(socket: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut stream = UnixStream::connect(socket)
        .unwrap_or_else(|err| panic!("cannot connect to {}: {err}", socket.display()));
    let body = body.unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: corral\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8(answer).expect("a UTF-8 answer");
    let (head, content) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {answer:?}"));
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
            content.to_owned()
        },
    )
}

/// The body of a chunked answer.
fn unchunk(mut content: &str) -> String {
    let mut body = String::new();
    loop {
        let (size, rest) = content.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("a hexadecimal chunk size");
        if size == 0 {
            return body;
        }
        body.push_str(&rest[..size]);
        content = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_chunked_body_is_joined() {
        assert_eq!(super::unchunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}
