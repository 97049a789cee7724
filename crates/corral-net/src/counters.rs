//! Interface counters as the kernel keeps them for the calling process's network namespace
//! (`/proc/self/net/dev`; sysfs would show the namespace it was mounted in instead).

use std::collections::BTreeMap;

/// One interface's totals since it was made, from its own point of view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

/// The counters of every interface of this process's network namespace, by name.
pub fn interface_counters() -> std::io::Result<BTreeMap<String, InterfaceCounters>> {
    Ok(parse(&std::fs::read_to_string("/proc/self/net/dev")?))
}

/// `/proc/net/dev`'s table: two header lines, then `NAME: rx bytes packets errs drop fifo frame
/// compressed multicast tx bytes packets ...`. Lines that do not fit are skipped.
fn parse(text: &str) -> BTreeMap<String, InterfaceCounters> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, numbers) = line.split_once(':')?;
            let numbers: Vec<u64> = numbers
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            let counters = InterfaceCounters {
                rx_bytes: *numbers.first()?,
                rx_packets: *numbers.get(1)?,
                tx_bytes: *numbers.get(8)?,
                tx_packets: *numbers.get(9)?,
            };
            Some((name.trim().to_owned(), counters))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_read_by_column() {
        let text = "Inter-|   Receive                            |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0\nveth12ab: 2084 2 0 0 0 0 0 0 70 1 0 0 0 0 0 0\nbroken: x\n";
        let table = parse(text);
        assert_eq!(table.len(), 2);
        assert_eq!(
            table["veth12ab"],
            InterfaceCounters {
                rx_bytes: 2084,
                rx_packets: 2,
                tx_bytes: 70,
                tx_packets: 1
            }
        );
    }

    #[test]
    fn this_namespace_has_a_loopback() {
        assert!(interface_counters().unwrap().contains_key("lo"));
    }
}
