//! Address lists: single addresses and CIDR networks, IPv4 and IPv6.
//!
//! In: strings from the configuration or the `IP_WHITELIST` environment variable (a JSON
//! list). Out: an [`IpList`] that answers whether an address is in it. No state.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

/// A list of addresses and networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpList {
    networks: Vec<IpNet>,
}

impl IpList {
    /// Parses entries such as `192.0.2.7`, `10.0.0.0/8`, `2001:db8::/32`.
    ///
    /// # Errors
    /// Names the first entry that is neither an address nor a network.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let mut networks = Vec::with_capacity(entries.len());
        for entry in entries {
            networks.push(parse_entry(entry.as_ref())?);
        }
        Ok(Self { networks })
    }

    /// Returns whether `ip` is one of the addresses or inside one of the networks.
    ///
    /// An IPv4 address written as IPv6 (`::ffff:192.0.2.7`) matches IPv4 entries.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        self.networks.iter().any(|net| net.contains(&ip))
    }

    /// Adds the entries of `other`.
    pub fn extend(&mut self, other: IpList) {
        self.networks.extend(other.networks);
    }

    /// Returns whether the list is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }
}

fn parse_entry(entry: &str) -> Result<IpNet, String> {
    let text = entry.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    let net: IpNet = text
        .parse()
        .map_err(|_| format!("`{entry}` is not an IP address or CIDR network"))?;
    if net.trunc() != net {
        return Err(format!(
            "`{entry}` has host bits set; the network is `{}`",
            net.trunc()
        ));
    }
    Ok(net)
}

impl<'de> Deserialize<'de> for IpList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = Vec::<String>::deserialize(deserializer)?;
        Self::parse(&entries).map_err(serde::de::Error::custom)
    }
}

/// Reads the `IP_WHITELIST` environment variable's JSON list of addresses and networks.
///
/// # Errors
/// Fails when the variable is set but is not a JSON list of valid entries.
pub fn ip_whitelist_from_env() -> Result<IpList, String> {
    let Ok(text) = std::env::var("IP_WHITELIST") else {
        return Ok(IpList::default());
    };
    parse_env_list(&text)
}

fn parse_env_list(text: &str) -> Result<IpList, String> {
    if text.trim().is_empty() {
        return Ok(IpList::default());
    }
    let entries: Vec<String> = serde_json::from_str(text)
        .map_err(|err| format!("IP_WHITELIST must be a JSON list of strings: {err}"))?;
    IpList::parse(&entries).map_err(|err| format!("IP_WHITELIST: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("valid address")
    }

    #[test]
    fn addresses_and_networks_of_both_families_match() {
        let list =
            IpList::parse(&["192.0.2.7", "10.0.0.0/8", "2001:db8::/32", "::1"]).expect("valid");
        assert!(list.contains(ip("192.0.2.7")));
        assert!(!list.contains(ip("192.0.2.8")));
        assert!(list.contains(ip("10.255.1.2")));
        assert!(!list.contains(ip("11.0.0.1")));
        assert!(list.contains(ip("2001:db8:ffff::1")));
        assert!(!list.contains(ip("2001:db9::1")));
        assert!(list.contains(ip("::1")));
        assert!(list.contains(ip("::ffff:10.1.1.1")), "IPv4-mapped IPv6");
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in [
            "10.0.0.0/33",
            "300.1.1.1",
            "fe80::/129",
            "example.com",
            "",
            "10.0.0.1/8",
        ] {
            let err = IpList::parse(&[bad]).expect_err(bad);
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn the_environment_list_is_json() {
        let list = parse_env_list(r#"["127.0.0.2", "10.0.0.0/8"]"#).expect("valid");
        assert!(list.contains(ip("127.0.0.2")));
        assert!(parse_env_list("").expect("empty").is_empty());
        assert!(parse_env_list("127.0.0.2").is_err());
        assert!(parse_env_list(r#"["nope"]"#)
            .expect_err("bad")
            .contains("IP_WHITELIST"));
    }
}
