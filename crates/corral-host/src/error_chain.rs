//! An error and its causes on one line, for the places that keep or send an error as text (an
//! exit record, an agent reply, a list that goes on past a failure). Library errors never repeat
//! their cause in their own message, so each cause appears exactly once.

use std::error::Error;

/// `err`'s message followed by each of its causes, joined by ": ".
pub fn error_chain(err: &dyn Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open disk image /a.qcow2")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn each_cause_follows_once_after_the_message() {
        let err = Outer(std::io::Error::other("no such file"));
        assert_eq!(
            error_chain(&err),
            "cannot open disk image /a.qcow2: no such file"
        );
        assert_eq!(error_chain(&std::io::Error::other("alone")), "alone");
    }
}
