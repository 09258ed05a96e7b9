//! Host-side interface names and aliases, derived deterministically from the
//! attachment (container id + interface name) so that DEL, CHECK and GC find the
//! link again without any state of their own.
//!
//! Name: "mbr" + 11 hex digits (44 bits) of a 64-bit FNV-1a hash of
//! "<containerId>/<ifname>", finished with the splitmix64 mixer so that the top
//! bits depend on every input byte. 14 bytes, inside Linux's 15-byte limit.
//! The hash is for spreading names, not for security: a collision only makes the
//! second ADD fail with "exists", it never touches another pod's link, because
//! every removal first checks the link's alias.
//! Alias (IFLA_IFALIAS): "membrane-cni:<network>:<containerId>/<ifname>"; ADD and
//! DEL remove a link only when its alias names their attachment, GC only links
//! whose alias names its own network.

pub const HOST_PREFIX: &str = "mbr";
const HASH_HEX_DIGITS: usize = 11;

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub fn host_iface_name(container_id: &str, ifname: &str) -> String {
    let hash = splitmix64(fnv1a64(format!("{container_id}/{ifname}").as_bytes()));
    format!(
        "{HOST_PREFIX}{}",
        &format!("{hash:016x}")[..HASH_HEX_DIGITS]
    )
}

/// Whether a name has the shape of our host-side names.
pub fn is_host_iface_name(name: &str) -> bool {
    name.len() == HOST_PREFIX.len() + HASH_HEX_DIGITS
        && name.starts_with(HOST_PREFIX)
        && name[HOST_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn alias_prefix(network: &str) -> String {
    format!("membrane-cni:{network}:")
}

pub fn host_alias(network: &str, container_id: &str, ifname: &str) -> String {
    let alias = format!("{}{container_id}/{ifname}", alias_prefix(network));
    // IFALIASZ is 256 including the terminating zero; the kernel rejects longer ones.
    alias.chars().take(255).collect()
}

/// Whether a host link's alias says it belongs to this attachment (in any network:
/// renaming the network must not orphan links). A link without an alias counts as
/// ours: it is one whose ADD died between creating the link and naming it.
/// Aliases cut at 255 bytes match when the cut text is a prefix of the attachment.
pub fn alias_names_attachment(alias: Option<&str>, container_id: &str, ifname: &str) -> bool {
    let Some(alias) = alias.filter(|a| !a.is_empty()) else {
        return true;
    };
    let Some(rest) = alias.strip_prefix("membrane-cni:") else {
        return false;
    };
    // Container ids and interface names hold no ':', so the attachment is after the last one.
    let Some((_, attachment)) = rest.rsplit_once(':') else {
        return false;
    };
    let wanted = format!("{container_id}/{ifname}");
    attachment == wanted
        || (alias.len() >= 255 && !attachment.is_empty() && wanted.starts_with(attachment))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deterministic_short_and_ours() {
        let a = host_iface_name("0123456789abcdef0123456789abcdef", "eth0");
        assert_eq!(
            a,
            host_iface_name("0123456789abcdef0123456789abcdef", "eth0")
        );
        assert_eq!(a.len(), 14);
        assert!(is_host_iface_name(&a));
        assert_ne!(
            a,
            host_iface_name("0123456789abcdef0123456789abcdef", "eth1")
        );
        assert_ne!(
            a,
            host_iface_name("0123456789abcdef0123456789abcdee", "eth0")
        );
    }

    #[test]
    fn the_hash_is_stable_across_builds() {
        // Pinned: a changed derivation would orphan the links of running pods.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(
            host_iface_name("c1", "eth0"),
            format!(
                "mbr{}",
                &format!("{:016x}", splitmix64(fnv1a64(b"c1/eth0")))[..11]
            )
        );
    }

    #[test]
    fn similar_ids_spread_over_many_names() {
        let names: std::collections::HashSet<String> = (0..10_000)
            .map(|i| host_iface_name(&format!("pod-{i}"), "eth0"))
            .collect();
        assert_eq!(names.len(), 10_000);
    }

    #[test]
    fn foreign_names_are_not_ours() {
        for name in [
            "eth0",
            "mbr",
            "mbr0123456789",
            "mbr0123456789ab",
            "mbr0123456789aG",
            "xbr0123456789a",
            "mbt12345ab",
        ] {
            assert!(!is_host_iface_name(name), "{name}");
        }
    }

    #[test]
    fn only_links_named_for_the_attachment_are_removed() {
        let ours = host_alias("k8s", "c1", "eth0");
        assert!(alias_names_attachment(Some(&ours), "c1", "eth0"));
        assert!(alias_names_attachment(
            Some(&host_alias("renamed", "c1", "eth0")),
            "c1",
            "eth0"
        ));
        assert!(alias_names_attachment(None, "c1", "eth0"));
        assert!(alias_names_attachment(Some(""), "c1", "eth0"));
        for foreign in [
            host_alias("k8s", "c2", "eth0"),
            host_alias("k8s", "c1", "eth1"),
            host_alias("k8s", "xc1", "eth0"),
            "somebody else's".into(),
            "membrane-cni:".into(),
        ] {
            assert!(
                !alias_names_attachment(Some(&foreign), "c1", "eth0"),
                "{foreign}"
            );
        }
        let long_id = "a".repeat(400);
        let cut = host_alias("k8s", &long_id, "eth0");
        assert!(alias_names_attachment(Some(&cut), &long_id, "eth0"));
        assert!(!alias_names_attachment(
            Some(&cut),
            &"b".repeat(400),
            "eth0"
        ));
    }

    #[test]
    fn aliases_name_network_and_attachment_within_the_kernel_limit() {
        assert_eq!(host_alias("k8s", "c1", "eth0"), "membrane-cni:k8s:c1/eth0");
        assert!(host_alias("k8s", "c1", "eth0").starts_with(&alias_prefix("k8s")));
        assert_eq!(host_alias("n", &"x".repeat(400), "eth0").len(), 255);
    }
}
