//! Validation of the names Kubernetes and container registries accept, done before anything is
//! sent to the cluster.

use crate::error::{Error, Result};

/// Checks an RFC 1123 DNS label: 1 to 63 characters of `a-z`, `0-9` and `-`, starting and ending
/// with a letter or digit. Namespaces, Jobs, Deployments and label-safe names must be one.
pub fn validate_dns_label(field: &'static str, name: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(Error::InvalidName {
            field,
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return bad("a DNS label must not be empty");
    }
    if name.len() > 63 {
        return bad(&format!(
            "a DNS label has at most 63 characters, this has {}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return bad(&format!(
            "`{c}` is not allowed: a DNS label holds only lower-case letters, digits and `-`"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return bad("a DNS label must start and end with a letter or digit");
    }
    Ok(())
}

/// Checks an RFC 1035 label (a DNS label that starts with a letter), which Service names must be.
pub fn validate_dns1035_label(field: &'static str, name: &str) -> Result<()> {
    validate_dns_label(field, name)?;
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(Error::InvalidName {
            field,
            name: name.to_string(),
            reason: "must start with a lower-case letter".to_string(),
        });
    }
    Ok(())
}

/// Checks a container image reference against the distribution reference grammar:
/// `[domain[:port]/]path-component(/path-component)*[:tag][@algorithm:hex]`.
///
/// Path components are lower-case alphanumerics separated by `.`, `_`, `__` or runs of `-`;
/// a tag is `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`; a `sha256` digest has 64 lower-case hex digits.
pub fn validate_image(image: &str) -> Result<()> {
    let bad = |reason: String| {
        Err(Error::InvalidImage {
            image: image.to_string(),
            reason,
        })
    };
    if image.is_empty() {
        return bad("the reference is empty".into());
    }
    if image.len() > 4096 {
        return bad("the reference is longer than 4096 characters".into());
    }
    if let Some(c) = image.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return bad(format!("{c:?} is not allowed in an image reference"));
    }
    // Digest.
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let Some((algo, hex)) = d.split_once(':') else {
            return bad(format!("digest `{d}` must be `algorithm:hex`"));
        };
        let algo_ok = !algo.is_empty()
            && algo.starts_with(|c: char| c.is_ascii_lowercase())
            && algo
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c));
        if !algo_ok {
            return bad(format!("digest algorithm `{algo}` is malformed"));
        }
        let want = match algo {
            "sha256" => Some(64),
            "sha384" => Some(96),
            "sha512" => Some(128),
            _ => None,
        };
        let hex_ok = hex.len() >= 32
            && hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
        if !hex_ok || want.is_some_and(|w| hex.len() != w) {
            return bad(format!(
                "digest `{d}` does not hold a valid {algo} hex value"
            ));
        }
    }
    // Tag: after the last `:` that follows the last `/`.
    let last_slash = rest.rfind('/');
    let (name, tag) = match rest.rfind(':') {
        Some(i) if last_slash.is_none_or(|s| i > s) => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return bad(format!(
                "tag `{t}` must be 1 to 128 of A-Z a-z 0-9 _ . - and not start with . or -"
            ));
        }
    }
    if name.is_empty() {
        return bad("the repository name is empty".into());
    }
    if name.len() > 255 {
        return bad("the repository name is longer than 255 characters".into());
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    // A first part with `.` or `:` or equal to `localhost` is a registry domain.
    if parts.len() > 1 {
        let first = parts[0];
        if first.contains('.') || first.contains(':') || first == "localhost" {
            validate_domain(first).or_else(bad)?;
            parts.remove(0);
        }
    }
    for p in parts {
        validate_path_component(p).or_else(bad)?;
    }
    Ok(())
}

fn validate_domain(d: &str) -> std::result::Result<(), String> {
    let (host, port) = if let Some(stripped) = d.strip_prefix('[') {
        // [ipv6]:port
        let Some((h, rest)) = stripped.split_once(']') else {
            return Err(format!("registry `{d}` has an unclosed `[`"));
        };
        if h.is_empty() || !h.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err(format!("registry `{d}` holds a malformed IPv6 address"));
        }
        match rest.strip_prefix(':') {
            Some(p) => (None, Some(p)),
            None if rest.is_empty() => (None, None),
            None => return Err(format!("registry `{d}` has text after `]`")),
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(d), None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) || p.parse::<u16>().is_err())
    {
        return Err(format!("registry port `{p}` is not a number in 0..=65535"));
    }
    if let Some(h) = host {
        for label in h.split('.') {
            let ok = !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(format!("registry host `{h}` is not a valid host name"));
            }
        }
    }
    Ok(())
}

fn validate_path_component(p: &str) -> std::result::Result<(), String> {
    let err = || {
        Err(format!(
            "repository component `{p}` must be lower-case letters and digits separated by `.`, `_`, `__` or `-`"
        ))
    };
    if p.is_empty() {
        return err();
    }
    let b = p.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return err();
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator: `.`, `_`, `__`, or one or more `-`.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return err(),
        }
        if i >= b.len() || !alnum(b[i]) || i == start {
            return err();
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["a", "lease-7", "spheron-lease-123", &"a".repeat(63)] {
            validate_dns_label("name", ok).unwrap();
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Upper",
            "under_score",
            "dot.ted",
            &"a".repeat(64),
        ] {
            let e = validate_dns_label("name", bad).unwrap_err();
            assert!(
                matches!(&e, Error::InvalidName { field: "name", name, .. } if name == bad),
                "{bad}: {e}"
            );
        }
        assert!(validate_dns1035_label("service", "7up").is_err());
        validate_dns1035_label("service", "svc-7").unwrap();
    }

    #[test]
    fn image_references() {
        for ok in [
            "busybox",
            "busybox:1.36",
            "library/busybox:latest",
            "nvcr.io/nvidia/pytorch:24.05-py3",
            "localhost:5000/team/trainer_v2",
            "registry.example.com:443/a/b/c:tag_1",
            "ghcr.io/org/model-server@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "[::1]:5000/img:1",
            "a__b/c--d",
        ] {
            validate_image(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "bad image",
            "nvcr.io//pytorch",
            "img@sha256:xyz",
            "img@sha256:0123",
            "registry:99999/img",
            "a..b",
            "-a",
            "/img",
            "img/",
        ] {
            let e = validate_image(bad).unwrap_err();
            assert!(
                matches!(&e, Error::InvalidImage { image, .. } if image == bad),
                "{bad}: {e}"
            );
        }
    }
}
