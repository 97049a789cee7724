//! dnsmasq's configuration file and the lease hook script, as text.

use std::fmt::Write;

use crate::config::{netmask, ServiceConfig};
use crate::paths::StatePaths;
use crate::user::ServiceUser;

/// The environment variable naming the program the lease hook runs (the corral binary).
pub(crate) const HOOK_EXE_ENV: &str = "CORRAL_LEASE_HOOK_EXE";
/// The environment variable naming the state directory the lease hook updates.
pub(crate) const HOOK_STATE_ENV: &str = "CORRAL_LEASE_HOOK_STATE";

/// The script dnsmasq runs on lease changes (`dhcp-script` takes a path and no arguments): it
/// hands the event to `corral network-lease-hook`, which the supervisor names in dnsmasq's
/// environment, so the script holds no path and never needs quoting.
pub(crate) const LEASE_HOOK: &str = "#!/bin/sh\n\
    exec \"$CORRAL_LEASE_HOOK_EXE\" network-lease-hook \"$CORRAL_LEASE_HOOK_STATE\" \"$@\"\n";

/// dnsmasq's whole configuration for `config`, one option a line (`--option` without dashes).
pub(crate) fn dnsmasq_conf(
    config: &ServiceConfig,
    paths: &StatePaths,
    user: &ServiceUser,
) -> String {
    let mut lines = vec![
        format!(
            "# The DHCP and DNS service of corral network {}.",
            config.network
        ),
        "# Written by corral; changes are overwritten.".into(),
        // Only this file: never /etc/dnsmasq.conf, /etc/hosts or the host's ethers.
        "no-hosts".into(),
        "keep-in-foreground".into(),
        // The supervisor knows dnsmasq's pid; no pid file to go stale.
        "pid-file=".into(),
        "log-facility=-".into(),
        format!("user={}", user.name),
        format!("group={}", user.group),
        "bind-interfaces".into(),
        format!("interface={}", config.bridge),
        "except-interface=lo".into(),
        format!("listen-address={}", config.gateway),
        "strict-order".into(),
        // Plain names and private reverse lookups are never sent upstream.
        "domain-needed".into(),
        "bogus-priv".into(),
        format!("domain={}", config.domain),
        format!("local=/{}/", config.domain),
        "expand-hosts".into(),
        format!("addn-hosts={}", paths.hosts().display()),
        format!(
            "dhcp-range={},{},{},{}",
            config.dhcp_start,
            config.dhcp_end,
            netmask(config.prefix_len),
            config.lease_secs
        ),
        "dhcp-authoritative".into(),
        format!("dhcp-hostsfile={}", paths.dhcp_hosts().display()),
        // Leases live in leases.json, kept by the hook; dnsmasq writes no lease file.
        "leasefile-ro".into(),
        format!("dhcp-script={}", paths.lease_hook().display()),
    ];
    if config.upstreams.is_empty() {
        lines.push("resolv-file=/etc/resolv.conf".into());
    } else {
        lines.push("no-resolv".into());
        lines.extend(
            config
                .upstreams
                .iter()
                .map(|server| format!("server={server}")),
        );
    }
    if config.ipv6.is_some() {
        lines.push("enable-ra".into());
        lines.push(format!(
            "dhcp-range=::,constructor:{},ra-stateless",
            config.bridge
        ));
    }
    lines.iter().fold(String::new(), |mut text, line| {
        let _ = writeln!(text, "{line}");
        text
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::path::Path;

    use super::*;
    use crate::config::tests::sample;
    use crate::config::Ipv6Config;

    fn render(config: &ServiceConfig) -> Vec<String> {
        let user = ServiceUser::find();
        let text = dnsmasq_conf(config, &StatePaths::new(Path::new("/state")), &user);
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn the_configuration_confines_dnsmasq_to_the_bridge_and_our_files() {
        let lines = render(&sample());
        for expected in [
            "no-hosts",
            "keep-in-foreground",
            "pid-file=",
            "bind-interfaces",
            "interface=corralbr0",
            "except-interface=lo",
            "listen-address=10.0.3.1",
            "strict-order",
            "domain=corral",
            "local=/corral/",
            "expand-hosts",
            "addn-hosts=/state/hosts",
            "dhcp-range=10.0.3.100,10.0.3.200,255.255.255.0,3600",
            "dhcp-authoritative",
            "dhcp-hostsfile=/state/dhcp-hosts",
            "leasefile-ro",
            "dhcp-script=/state/lease-hook",
            "resolv-file=/etc/resolv.conf",
        ] {
            assert!(lines.iter().any(|l| l == expected), "missing {expected}");
        }
        assert!(!lines.iter().any(|l| l.starts_with("enable-ra")));
        assert!(!lines.iter().any(|l| l.starts_with("server=")));
    }

    #[test]
    fn upstreams_replace_the_host_resolvers_and_ipv6_adds_router_advertisements() {
        let mut config = sample();
        config.upstreams = vec![
            Ipv4Addr::new(198, 51, 100, 53).into(),
            "fd00::53".parse().unwrap(),
        ];
        config.ipv6 = Some(Ipv6Config {
            gateway: "fd42::1".parse().unwrap(),
            prefix_len: 64,
        });
        let lines = render(&config);
        let position = |wanted: &str| lines.iter().position(|l| l == wanted);
        assert!(position("no-resolv").is_some());
        assert!(position("resolv-file=/etc/resolv.conf").is_none());
        // strict-order asks them in the order given.
        assert!(position("server=198.51.100.53") < position("server=fd00::53"));
        assert!(position("enable-ra").is_some());
        assert!(position("dhcp-range=::,constructor:corralbr0,ra-stateless").is_some());
    }

    #[test]
    fn the_hook_script_passes_every_argument_through() {
        assert!(LEASE_HOOK.starts_with("#!/bin/sh\n"));
        assert!(LEASE_HOOK.contains(&format!("\"${HOOK_EXE_ENV}\" network-lease-hook")));
        assert!(LEASE_HOOK.contains(&format!("\"${HOOK_STATE_ENV}\" \"$@\"")));
    }
}
