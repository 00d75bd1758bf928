//! URL helpers.

/// Whether the URL's host is the loopback interface (`localhost`, `127.0.0.0/8`, `::1`):
/// plain `http://` is allowed there without `allow_insecure_http`.
pub(crate) fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}
