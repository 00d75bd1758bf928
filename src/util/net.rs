//! URL helpers.

/// Whether the URL's host is the loopback interface (`localhost`, `127.0.0.0/8`, `::1`):
/// plain `http://` is allowed there without `allow_insecure_http`.
fn is_loopback(url: &url::Url) -> bool {
    url.host().is_some_and(|h| is_loopback_host(&h))
}

/// Whether `host` is the loopback interface. For a scheme the URL parser does not know
/// (`smtp://`) an IP address stays a domain, so a domain that is a loopback IP counts too.
pub(crate) fn is_loopback_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => {
            d.eq_ignore_ascii_case("localhost")
                || d.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
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
