//! The allow-list of outbound destinations and the address ranges refused unless listed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where outbound requests may go: host names, `*.` wildcard subdomains, IP addresses and
/// CIDRs, each optionally with `:port`. Empty (the default) allows nothing.
///
/// A private, loopback, link-local or otherwise special address is reachable only through an
/// IP or CIDR entry covering it: a host-name entry alone never unlocks one.
///
/// ```
/// use offload_worker::handlers::outbound::AllowList;
/// let list = AllowList::parse("OFFLOAD_WEBHOOK_ALLOW", "hooks.example.com, *.example.org:443, 10.0.0.0/8").unwrap();
/// assert_eq!(list.len(), 3);
/// assert!(AllowList::parse("OFFLOAD_WEBHOOK_ALLOW", "10.0.0.0/33").is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<Entry>,
}

/// One allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    host: HostPattern,
    /// `None`: any port.
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// Exactly this host name (lower case).
    Name(String),
    /// Any subdomain of this suffix (lower case, without the `*.`), not the suffix itself.
    Subdomains(String),
    /// An address range.
    Net(Cidr),
}

/// An IP network: `addr/prefix`, the address canonical (IPv4-mapped IPv6 as IPv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_match(
                u128::from(u32::from(net)) << 96,
                u128::from(u32::from(ip)) << 96,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_match(u128::from(net), u128::from(ip), self.prefix)
            }
            _ => false,
        }
    }
}

/// True when the first `prefix` bits of `a` and `b` agree.
fn prefix_match(a: u128, b: u128, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - u32::from(prefix.min(128)));
    a & mask == b & mask
}

impl AllowList {
    /// Parses the comma-separated entries of setting `setting` (named in the error).
    pub fn parse(setting: &str, raw: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let entry = parse_entry(item)
                .map_err(|why| format!("{setting}: entry {item:?} is not valid: {why}"))?;
            entries.push(entry);
        }
        Ok(AllowList { entries })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True when a host-name or wildcard entry names `host` (lower case) on `port`.
    fn names(&self, host: &str, port: u16) -> bool {
        self.entries.iter().any(|e| {
            e.port.is_none_or(|p| p == port)
                && match &e.host {
                    HostPattern::Name(name) => name == host,
                    HostPattern::Subdomains(suffix) => host
                        .strip_suffix(suffix.as_str())
                        .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
                    HostPattern::Net(_) => false,
                }
        })
    }

    /// True when an IP or CIDR entry covers `ip` on `port`.
    fn covers(&self, ip: IpAddr, port: u16) -> bool {
        self.entries.iter().any(|e| {
            e.port.is_none_or(|p| p == port)
                && matches!(&e.host, HostPattern::Net(net) if net.contains(ip))
        })
    }

    /// Why a connection to `ip` for `host:port` is refused, or `None` when it is allowed:
    /// an IP/CIDR entry covers it, or a name entry names `host` and `ip` is a public address.
    pub fn refusal(&self, host: &str, port: u16, ip: IpAddr) -> Option<String> {
        if self.covers(ip, port) {
            return None;
        }
        let named = self.names(&host.to_ascii_lowercase(), port);
        match special_range(ip) {
            Some(range) => Some(format!(
                "{ip} is a {range} address, reachable only through an IP or CIDR entry covering it"
            )),
            None if named => None,
            None => Some(format!("{host}:{port} ({ip}) matches no entry")),
        }
    }
}

fn parse_entry(item: &str) -> Result<Entry, String> {
    if item.contains("://") || item.contains('@') {
        return Err("an entry is a host, not a URL: write `hooks.example.com:443`".to_owned());
    }
    // `[v6]` or `[v6]:port`.
    if let Some(rest) = item.strip_prefix('[') {
        let (ip, after) = rest.split_once(']').ok_or("a `[` without its `]`")?;
        let ip: Ipv6Addr = ip
            .parse()
            .map_err(|_| format!("{ip:?} is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(parse_port(
                p.strip_prefix(':').ok_or("expected `:port` after `]`")?,
            )?),
        };
        return Ok(net_entry(IpAddr::V6(ip), None, port));
    }
    // `addr/prefix` or `addr/prefix:port`.
    if let Some((addr, rest)) = item.split_once('/') {
        let (prefix, port) = match rest.split_once(':') {
            Some((prefix, port)) => (prefix, Some(parse_port(port)?)),
            None => (rest, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("{prefix:?} is not a prefix length"))?;
        return Ok(net_entry(addr, Some(prefix), port)).and_then(|e| match e.host {
            HostPattern::Net(net) if net.prefix > if net.addr.is_ipv4() { 32 } else { 128 } => {
                Err(format!("prefix /{prefix} is too long for {addr}"))
            }
            _ => Ok(e),
        });
    }
    // A bare IPv6 address (its colons are not a port).
    if let Ok(ip) = item.parse::<Ipv6Addr>() {
        return Ok(net_entry(IpAddr::V6(ip), None, None));
    }
    let (host, port) = match item.rsplit_once(':') {
        Some((host, port)) => (host, Some(parse_port(port)?)),
        None => (item, None),
    };
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(net_entry(IpAddr::V4(ip), None, port));
    }
    let host = host.to_ascii_lowercase();
    let (pattern, name) = match host.strip_prefix("*.") {
        Some(suffix) => (HostPattern::Subdomains(suffix.to_owned()), suffix),
        None => (HostPattern::Name(host.clone()), host.as_str()),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(
            "expected a host name (`hooks.example.com`), `*.example.com`, an IP address or a CIDR, each with an optional `:port`".to_owned(),
        );
    }
    Ok(Entry {
        host: pattern,
        port,
    })
}

fn net_entry(addr: IpAddr, prefix: Option<u8>, port: Option<u16>) -> Entry {
    let canonical = addr.to_canonical();
    // An IPv4-mapped network's prefix counts the 96 mapping bits.
    let prefix = match (addr, canonical, prefix) {
        (IpAddr::V6(_), IpAddr::V4(_), Some(p)) => p.saturating_sub(96),
        (_, IpAddr::V4(_), p) => p.unwrap_or(32),
        (_, IpAddr::V6(_), p) => p.unwrap_or(128),
    };
    Entry {
        host: HostPattern::Net(Cidr {
            addr: canonical,
            prefix,
        }),
        port,
    }
}

fn parse_port(raw: &str) -> Result<u16, String> {
    match raw.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{raw:?} is not a port (1-65535)")),
        Ok(p) => Ok(p),
    }
}

/// The special range `ip` is in (refused unless an IP/CIDR entry covers it), if any.
/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    const V4: &[([u8; 4], u8, &str)] = &[
        ([0, 0, 0, 0], 8, "unspecified (\"this network\")"),
        ([10, 0, 0, 0], 8, "private (RFC 1918)"),
        ([100, 64, 0, 0], 10, "shared (CGNAT, RFC 6598)"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([169, 254, 0, 0], 16, "link-local (incl. cloud metadata)"),
        ([172, 16, 0, 0], 12, "private (RFC 1918)"),
        ([192, 0, 0, 0], 24, "IETF protocol assignment"),
        ([192, 168, 0, 0], 16, "private (RFC 1918)"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([240, 0, 0, 0], 4, "reserved or broadcast"),
    ];
    const V6: &[(u128, u8, &str)] = &[
        (0, 128, "unspecified"),
        (1, 128, "loopback"),
        (0x0064_ff9b_u128 << 96, 96, "NAT64 (embeds an IPv4 address)"),
        (0xfc00_u128 << 112, 7, "unique-local"),
        (0xfe80_u128 << 112, 10, "link-local"),
        (0xfec0_u128 << 112, 10, "site-local"),
        (0xff00_u128 << 112, 8, "multicast"),
    ];
    match ip.to_canonical() {
        IpAddr::V4(v4) => V4.iter().find_map(|(net, prefix, name)| {
            Cidr {
                addr: IpAddr::V4(Ipv4Addr::from(*net)),
                prefix: *prefix,
            }
            .contains(IpAddr::V4(v4))
            .then_some(*name)
        }),
        IpAddr::V6(v6) => V6.iter().find_map(|(net, prefix, name)| {
            prefix_match(*net, u128::from(v6), *prefix).then_some(*name)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(raw: &str) -> AllowList {
        AllowList::parse("OFFLOAD_WEBHOOK_ALLOW", raw).expect("valid")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn entries_parse_and_bad_ones_are_refused_naming_the_setting() {
        assert!(list("").is_empty());
        assert!(list(" , ").is_empty());
        assert_eq!(
            list("hooks.example.com, *.Example.org:443, 127.0.0.1, 10.0.0.0/8, ::1, [::1]:8080, fd00::/8:443").len(),
            7
        );
        for (bad, why) in [
            ("10.0.0.0/33", "too long"),
            ("::/129", "too long"),
            ("10.0.0.0/x", "prefix length"),
            ("example.com:0", "not a port"),
            ("example.com:99999", "not a port"),
            ("exa mple.com", "expected a host name"),
            ("*.", "expected a host name"),
            ("[::1", "without its"),
            ("[::1]x", "expected `:port`"),
            ("http://example.com", "not a URL"),
            ("user@example.com", "not a URL"),
            ("-bad.com", "expected a host name"),
        ] {
            let e = AllowList::parse("OFFLOAD_WEBHOOK_ALLOW", bad).expect_err(bad);
            assert!(
                e.starts_with("OFFLOAD_WEBHOOK_ALLOW: entry") && e.contains(why),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn every_special_range_is_refused_even_for_a_listed_host_name() {
        let named = list("internal.example.com");
        for addr in [
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.255.0.9",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.168.1.1",
            "198.18.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "64:ff9b::a00:1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(special_range(ip(addr)).is_some(), "{addr} is special");
            let why = named
                .refusal("internal.example.com", 443, ip(addr))
                .unwrap_or_else(|| panic!("{addr} must be refused"));
            assert!(why.contains("IP or CIDR entry"), "{addr}: {why}");
        }
        for public in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert_eq!(special_range(ip(public)), None, "{public}");
            assert_eq!(
                named.refusal("internal.example.com", 443, ip(public)),
                None,
                "{public}"
            );
        }
    }

    #[test]
    fn ip_and_cidr_entries_unlock_what_they_cover_and_nothing_else() {
        let l = list("127.0.0.1, 10.0.0.0/8:8443, ::1, fd00::/16");
        assert_eq!(l.refusal("localhost", 80, ip("127.0.0.1")), None);
        assert_eq!(
            l.refusal("x", 80, ip("::ffff:127.0.0.1")),
            None,
            "mapped form"
        );
        assert!(l.refusal("x", 80, ip("127.0.0.2")).is_some());
        assert_eq!(l.refusal("x", 8443, ip("10.200.3.4")), None);
        assert!(l.refusal("x", 443, ip("10.200.3.4")).is_some(), "port");
        assert!(l.refusal("x", 8443, ip("11.0.0.1")).is_some());
        assert_eq!(l.refusal("x", 1, ip("::1")), None);
        assert_eq!(l.refusal("x", 1, ip("fd00:1::5")), None);
        assert!(l.refusal("x", 1, ip("fd01::5")).is_some());
        let mapped = list("::ffff:192.168.0.0/112");
        assert_eq!(mapped.refusal("x", 1, ip("192.168.7.7")), None);
        assert!(mapped.refusal("x", 1, ip("192.169.0.1")).is_some());
        assert_eq!(list("0.0.0.0/0").refusal("x", 1, ip("192.168.7.7")), None);
    }

    #[test]
    fn names_and_wildcards_match_with_their_ports() {
        let l = list("hooks.example.com, *.example.org:443");
        let public = ip("93.184.215.14");
        assert_eq!(l.refusal("hooks.example.com", 8080, public), None);
        assert_eq!(l.refusal("HOOKS.example.com", 443, public), None);
        assert!(l.refusal("evil.hooks.example.com", 443, public).is_some());
        assert!(l.refusal("example.com", 443, public).is_some());
        assert_eq!(l.refusal("a.example.org", 443, public), None);
        assert_eq!(l.refusal("a.b.example.org", 443, public), None);
        assert!(l.refusal("a.example.org", 80, public).is_some(), "port");
        assert!(
            l.refusal("example.org", 443, public).is_some(),
            "not the apex"
        );
        assert!(l.refusal("badexample.org", 443, public).is_some());
        assert!(
            AllowList::default()
                .refusal("hooks.example.com", 443, public)
                .is_some()
        );
    }
}
