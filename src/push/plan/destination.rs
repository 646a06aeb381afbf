//! Where an image goes: `{registry}/{prefix}{name}:{tag}` built by
//! `targets::destination`, checked, and split into host and repository
//! ([`Destination`]), and the tag grammar ([`validate_tag`]). Pure string
//! work: knows nothing of sources, bazel-bin or the network.

/// Where an image goes: one repository on one registry host, under a tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// Host as in references (`quay.io`, `localhost:5000`, `docker.io`).
    pub host: String,
    /// Repository path on that host (`kubevirt/virt-api`).
    pub repo: String,
    pub tag: String,
    /// The reference as the user reads it: `{registry}/{prefix}{name}:{tag}`.
    pub display: String,
}

/// Check a tag against the distribution spec's grammar.
pub fn validate_tag(tag: &str) -> Result<(), String> {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
    if first_ok && rest_ok && tag.len() <= 128 {
        Ok(())
    } else {
        Err(format!(
            "invalid tag {tag:?}: a tag is 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
        ))
    }
}

impl Destination {
    /// Build and validate `{registry}/{prefix}{name}:{tag}`.
    pub fn new(
        registry: &str,
        image_prefix: &str,
        name: &str,
        tag: &str,
    ) -> Result<Destination, String> {
        validate_tag(tag)?;
        let display = crate::targets::destination(registry, image_prefix, name, tag);
        let plain = display
            .strip_suffix(tag)
            .and_then(|d| d.strip_suffix(':'))
            .and_then(plain_host_and_repo);
        if let Some((host, repo)) = plain {
            return Ok(Destination {
                host: host.to_string(),
                repo: repo.to_string(),
                tag: tag.to_string(),
                display,
            });
        }
        let parsed: oci_spec::distribution::Reference = display.parse().map_err(|e| {
            format!("invalid destination {display:?} (from --registry {registry:?}, --image-prefix {image_prefix:?}): {e}")
        })?;
        if parsed.tag() != Some(tag) || parsed.digest().is_some() {
            return Err(format!("invalid destination {display:?}: --registry and --image-prefix must not hold a tag or digest"));
        }
        Ok(Destination {
            host: parsed.registry().to_string(),
            repo: parsed.repository().to_string(),
            tag: tag.to_string(),
            display,
        })
    }
}

/// `host[:port]/path` split in two when it is plainly valid by a strict
/// subset of the distribution reference grammar (a host with a dot, a port
/// or `localhost`, lowercase path components of letters and digits joined
/// by single `.`, `_` or `-`), else `None` and oci-spec decides. oci-spec's
/// parser compiles a large regex on first use, ~30 ms: a quarter of a warm
/// re-push, for names that are almost always this simple.
fn plain_host_and_repo(name: &str) -> Option<(&str, &str)> {
    let (host, repo) = name.split_once('/')?;
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    // Letters and digits, runs joined by single separators from `seps`.
    let joined = |part: &str, seps: &[char]| {
        !part.is_empty()
            && part.starts_with(alnum)
            && part.ends_with(alnum)
            && part.chars().all(|c| alnum(c) || seps.contains(&c))
            && !part
                .as_bytes()
                .windows(2)
                .any(|w| !alnum(w[0] as char) && !alnum(w[1] as char))
    };
    let (hostname, port) = match host.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (host, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = hostname.split('.').all(|label| joined(label, &['-']))
        && (hostname.contains('.') || port.is_some() || hostname == "localhost")
        // Docker Hub's names are normalised (library/, docker.io): oci-spec's job.
        && !matches!(hostname, "docker.io" | "index.docker.io");
    let repo_ok = repo.split('/').all(|c| joined(c, &['.', '_', '-']));
    (port_ok && host_ok && repo_ok && name.len() <= 255).then_some((host, repo))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_split_as_oci_spec_splits_them_and_others_are_left_to_it() {
        let split = |name: &str| {
            let r: oci_spec::distribution::Reference = format!("{name}:t").parse().ok()?;
            Some((r.registry().to_string(), r.repository().to_string()))
        };
        for name in [
            "quay.io/kubevirt/virt-api",
            "localhost:5000/kubevirt/kv-virt-api",
            "127.0.0.1:38811/kubevirt/cirros-container-disk-demo",
            "localhost/a",
            "registry.example.com:443/team/sub.dir/name_with_underscore",
            "ghcr.io/kubevirt/a.b-c_d",
        ] {
            let (host, repo) = plain_host_and_repo(name).expect(name);
            assert_eq!(
                Some((host.to_string(), repo.to_string())),
                split(name),
                "{name}"
            );
        }
        for name in [
            "kubevirt/virt-api",         // no host: Docker Hub
            "docker.io/virt-api",        // normalised to library/
            "Quay.io/kubevirt/virt-api", // uppercase
            "quay.io/KubeVirt/virt-api", // invalid
            "quay.io/kubevirt/a__b",     // valid, but not plain
            "quay.io/kubevirt/-a",       // invalid
            "quay.io/kubevirt//a",       // invalid
            "quay.io:/kubevirt/a",       // invalid
            "quay.io/kubevirt/a.",       // invalid
            "[::1]:5000/kubevirt/a",     // valid, but not plain
            "quay.io/kubevirt/a@sha256", // invalid
        ] {
            assert_eq!(plain_host_and_repo(name), None, "{name}");
        }
        // Whatever the fast path accepts, oci-spec accepts and splits alike.
        let alphabet = b"ab0.-_/:";
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut name = String::from("h.io/");
            for _ in 0..(x % 9) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                name.push(alphabet[(x % alphabet.len() as u64) as usize] as char);
            }
            if let Some((host, repo)) = plain_host_and_repo(&name) {
                assert_eq!(
                    Some((host.to_string(), repo.to_string())),
                    split(&name),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn destinations_parse_and_validate() {
        let d = Destination::new("localhost:5000/kubevirt", "", "virt-api", "devel").unwrap();
        assert_eq!(
            (d.host.as_str(), d.repo.as_str(), d.tag.as_str()),
            ("localhost:5000", "kubevirt/virt-api", "devel")
        );
        assert_eq!(d.display, "localhost:5000/kubevirt/virt-api:devel");
        let d = Destination::new("quay.io/kubevirt", "kv-", "virt-api", "v1.2.3").unwrap();
        assert_eq!(d.repo, "kubevirt/kv-virt-api");
        let d = Destination::new("kubevirt", "", "virt-api", "latest").unwrap();
        assert_eq!(
            (d.host.as_str(), d.repo.as_str()),
            ("docker.io", "kubevirt/virt-api")
        );

        assert!(Destination::new("quay.io/kubevirt", "", "virt-api", "-bad")
            .unwrap_err()
            .contains("invalid tag"));
        assert!(Destination::new("quay.io/kubevirt", "", "virt-api", "a:b").is_err());
        assert!(Destination::new("Quay.io/KubeVirt", "", "virt-api", "v1").is_err());
        assert!(Destination::new("quay.io/kubevirt", "UPPER", "virt-api", "v1").is_err());
        assert!(Destination::new("quay.io/kubevirt:tag", "", "virt-api", "v1").is_err());
    }
}
