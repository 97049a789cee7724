//! Which IPv4 subnets the host already routes, and a free `10.X.Y.0/24` for a new network (as
//! Incus picks one): a subnet the host reaches some other way would be shadowed or would shadow.

use std::net::Ipv4Addr;

use serde::Deserialize;

use crate::cidr::Ipv4Cidr;
use crate::link::{ip, LinkError};

/// A subnet the host routes or holds an address in, and where (for error messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRoute {
    pub subnet: Ipv4Cidr,
    pub device: Option<String>,
}

#[derive(Deserialize)]
struct Route {
    dst: String,
    #[serde(default)]
    dev: Option<String>,
}

#[derive(Deserialize)]
struct AddressInfo {
    local: Ipv4Addr,
    prefixlen: u8,
}

#[derive(Deserialize)]
struct Interface {
    ifname: String,
    #[serde(default)]
    addr_info: Vec<AddressInfo>,
}

/// Every IPv4 route of every table and every IPv4 address (with its subnet) of the calling
/// thread's network namespace, except the default routes (they cover everything).
pub fn host_routes() -> Result<Vec<HostRoute>, LinkError> {
    let route_args = ["-4", "-j", "route", "show", "table", "all"];
    let routes: Vec<Route> = parse(&route_args, &ip(None, &route_args)?)?;
    let addr_args = ["-4", "-j", "address", "show"];
    let interfaces: Vec<Interface> = parse(&addr_args, &ip(None, &addr_args)?)?;
    let mut found: Vec<HostRoute> = routes
        .into_iter()
        .filter_map(|route| {
            Some(HostRoute {
                subnet: parse_destination(&route.dst)?,
                device: route.dev,
            })
        })
        .collect();
    for interface in interfaces {
        found.extend(interface.addr_info.into_iter().filter_map(|info| {
            Some(HostRoute {
                subnet: Ipv4Cidr::new(info.local, info.prefixlen)?.subnet(),
                device: Some(interface.ifname.clone()),
            })
        }));
    }
    Ok(found)
}

fn parse<T: serde::de::DeserializeOwned>(args: &[&str], out: &str) -> Result<T, LinkError> {
    serde_json::from_str(out).map_err(|source| LinkError::Output {
        args: args.join(" "),
        source,
    })
}

/// A route's `dst`: `10.0.3.0/24`, or a bare address for a host route; `default` is none.
fn parse_destination(dst: &str) -> Option<Ipv4Cidr> {
    if let Ok(cidr) = dst.parse::<Ipv4Cidr>() {
        return (cidr.prefix > 0).then_some(cidr);
    }
    Ipv4Cidr::new(dst.parse().ok()?, 32)
}

/// The first route of `routes` that overlaps `subnet`.
pub fn routed(subnet: Ipv4Cidr, routes: &[HostRoute]) -> Option<&HostRoute> {
    routes.iter().find(|route| route.subnet.overlaps(subnet))
}

/// The gateway (`.1/24`) of the first `10.X.Y.0/24`, from `10.0.3.0` on (lxc's old `lxcbr0`
/// subnet) upwards, that no route and no taken subnet overlaps.
pub fn choose_free(routes: &[HostRoute], taken: &[Ipv4Cidr]) -> Option<Ipv4Cidr> {
    (3..=u16::MAX)
        .map(|n| {
            let [x, y] = n.to_be_bytes();
            Ipv4Addr::new(10, x, y, 1)
        })
        .filter_map(|gateway| Ipv4Cidr::new(gateway, 24))
        .find(|candidate| {
            routed(*candidate, routes).is_none()
                && !taken.iter().any(|subnet| subnet.overlaps(*candidate))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dst: &str) -> HostRoute {
        HostRoute {
            subnet: parse_destination(dst).unwrap(),
            device: Some("eth0".into()),
        }
    }

    #[test]
    fn the_first_free_subnet_avoids_routes_and_other_networks() {
        assert_eq!(choose_free(&[], &[]).unwrap().to_string(), "10.0.3.1/24");
        let routes = [route("10.0.0.0/14"), route("10.4.0.7")];
        let taken = ["10.4.1.1/24".parse().unwrap()];
        assert_eq!(
            choose_free(&routes, &taken).unwrap().to_string(),
            "10.4.2.1/24"
        );
        assert!(parse_destination("default").is_none());
        assert!(choose_free(&[route("10.0.0.0/8")], &[]).is_none());
    }
}
