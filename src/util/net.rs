//! URL helpers.

/// Whether the URL's host is the loopback interface (`localhost`, `127.0.0.0/8`, `::1`):
/// plain `http://` is allowed there without `allow_insecure_http`.
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Whether `url` may be used for an HTTP endpoint: `https://`, or plain `http://` to a
/// loopback host or with `allow_insecure_http`. The error is the message for the URL's key.
pub(crate) fn check_http_scheme(url: &url::Url, allow_insecure_http: bool) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http || is_loopback(url) => Ok(()),
        "http" => Err(
            "plain http:// is only allowed for loopback hosts; use https:// or set \
                       allow_insecure_http = true"
                .into(),
        ),
        other => Err(format!("unsupported scheme {other:?}")),
    }
}
