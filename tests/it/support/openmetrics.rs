//! A plain HTTP GET for the admin endpoint, and a small strict parser of the Prometheus /
//! OpenMetrics text format: every sample must belong to a family declared by `# TYPE` before
//! it, label values must be quoted and escaped, values must be numbers, and the text must end
//! with `# EOF`. Strict, so that a malformed `/metrics` fails the test instead of being read
//! past.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

/// `GET path` on `addr` (HTTP/1.1, one request per connection): status, content type, body.
pub fn get(addr: &str, path: &str) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end: {text:?}"));
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head:?}"));
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "chunked bodies are not read here: {head}"
    );
    let content_type = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    (status, content_type, body.to_string())
}

/// One sample: its metric name (with `_total`, `_bucket`… as written), labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition: family name → type, and the samples in order.
#[derive(Debug, Default)]
pub struct Exposition {
    pub types: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The samples named `name` whose labels include every `(key, value)` of `with`.
    pub fn find(&self, name: &str, with: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && with
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The one sample named `name` with these labels; panics on none or several.
    pub fn value(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        match self.find(name, with).as_slice() {
            [one] => one.value,
            other => panic!("{} samples {name} {with:?}: {other:?}", other.len()),
        }
    }
}

/// The suffixes a sample may add to its family's name, by type.
fn suffixes(ty: &str) -> &'static [&'static str] {
    match ty {
        "counter" => &["_total", "_created"],
        "histogram" => &["_bucket", "_count", "_sum", "_created"],
        "summary" => &["", "_count", "_sum", "_created"],
        "info" => &["_info"],
        "gauge" | "unknown" | "stateset" | "gaugehistogram" => &[""],
        _ => &[],
    }
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parse `text`, or say which line is wrong and why.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    let mut eof = false;
    for (i, line) in text.lines().enumerate() {
        let err = |m: &str| format!("line {}: {m}: {line:?}", i + 1);
        if eof {
            return Err(err("text after # EOF"));
        }
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if !valid_name(name) {
                return Err(err("bad metric name"));
            }
            match kw {
                "TYPE" => {
                    let ty = parts.next().unwrap_or("");
                    if suffixes(ty).is_empty() {
                        return Err(err("unknown type"));
                    }
                    if out.types.insert(name.to_string(), ty.to_string()).is_some() {
                        return Err(err("family declared twice"));
                    }
                }
                "HELP" | "UNIT" => {}
                _ => return Err(err("unknown comment")),
            }
            continue;
        }
        let sample = parse_sample(line).map_err(|m| err(&m))?;
        let declared = out.types.iter().any(|(family, ty)| {
            suffixes(ty)
                .iter()
                .any(|suffix| sample.name == format!("{family}{suffix}"))
        });
        if !declared {
            return Err(err("sample of no declared family"));
        }
        out.samples.push(sample);
    }
    if !eof {
        return Err("no # EOF at the end".into());
    }
    Ok(out)
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| "no value".to_string())?;
    let name = &line[..name_end];
    if !valid_name(name) {
        return Err("bad sample name".into());
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut l) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = l.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = l.find('=').ok_or("label without =")?;
            let key = &l[..eq];
            if !valid_name(key) {
                return Err(format!("bad label name {key:?}"));
            }
            l = l[eq + 1..]
                .strip_prefix('"')
                .ok_or("unquoted label value")?;
            let mut value = String::new();
            let mut chars = l.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err("unterminated label value".into()),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c @ ('\\' | '"'))) => value.push(c),
                        _ => return Err("bad escape in a label value".into()),
                    },
                    Some((_, c)) => value.push(c),
                }
            };
            if labels.insert(key.to_string(), value).is_some() {
                return Err(format!("label {key} twice"));
            }
            l = &l[end + 1..];
            l = l.strip_prefix(',').unwrap_or(l);
        }
    }
    let mut fields = rest
        .strip_prefix(' ')
        .ok_or("no space before the value")?
        .split(' ');
    let value = fields.next().unwrap_or("");
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("bad value {v:?}"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<f64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    if fields.next().is_some() {
        return Err("extra fields".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

#[test]
fn the_parser_is_strict() {
    let good = "# HELP a_b A.\n# TYPE a_b counter\na_b_total{job=\"r\\\"x\"} 3\n# EOF\n";
    let e = parse(good).unwrap();
    assert_eq!(e.value("a_b_total", &[("job", "r\"x")]), 3.0);
    for bad in [
        "# TYPE a_b counter\na_b_total 3\n",                   // no EOF
        "a_b_total 3\n# EOF\n",                                // undeclared
        "# TYPE a_b counter\na_b 3\n# EOF\n",                  // counter without _total
        "# TYPE a_b counter\na_b_total{job=r} 3\n# EOF\n",     // unquoted
        "# TYPE a_b counter\na_b_total{job=\"r\"} x\n# EOF\n", // not a number
        "# TYPE a_b counter\n# EOF\na_b_total 1\n",            // after EOF
    ] {
        assert!(parse(bad).is_err(), "accepted: {bad:?}");
    }
}
