//! A hostile SCIM target on 127.0.0.1, for what the sandbox's fault injection cannot
//! express: answers scripted per request (any status, any headers, ids the sandbox would
//! never hand out, a body without end), and a record of every request exactly as it arrived
//! (raw path, unnormalised), so a test can assert what was never sent.

#![allow(dead_code)]

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// The path as sent, percent-encoding kept, without the query.
    pub path: String,
    /// The decoded `filter` query parameter, if any.
    pub filter: Option<String>,
    /// Every request header, as text.
    pub headers: Vec<(String, String)>,
}

/// What to answer.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: ReplyBody,
}

pub enum ReplyBody {
    Empty,
    Json(Value),
    /// 64 KiB chunks of spaces until the client hangs up.
    Endless,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/scim+json".into())],
            body: ReplyBody::Json(body),
        }
    }

    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: ReplyBody::Empty,
        }
    }

    pub fn endless() -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "application/scim+json".into())],
            body: ReplyBody::Endless,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// `{"totalResults": n, "Resources": [...]}` with the ListResponse schema.
pub fn list(resources: Vec<Value>) -> Value {
    serde_json::json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": resources.len(),
        "Resources": resources,
    })
}

type Script = dyn Fn(&Seen, usize) -> Reply + Send + Sync;

struct Shared {
    script: Box<Script>,
    seen: Mutex<Vec<Seen>>,
}

/// The running server; stopped when dropped.
pub struct Hostile {
    shared: Arc<Shared>,
    base: String,
    rt: Option<tokio::runtime::Runtime>,
}

impl Hostile {
    /// Starts a server answering each request with `script(request, index)`, where `index`
    /// counts the requests received before it. Its SCIM base URL is `http://…/scim/v2`.
    pub fn start(script: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Hostile {
        let shared = Arc::new(Shared {
            script: Box::new(script),
            seen: Mutex::new(Vec::new()),
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("hostile runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        let app = Router::new().fallback(handle).with_state(shared.clone());
        rt.spawn(async move { axum::serve(listener, app).await });
        Hostile {
            shared,
            base: format!("http://{addr}/scim/v2"),
            rt: Some(rt),
        }
    }

    pub fn url(&self) -> String {
        self.base.clone()
    }

    /// Every request received so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let filter = req.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "filter")
            .map(|(_, v)| v.into_owned())
    });
    let seen = Seen {
        method: req.method().as_str().to_string(),
        path: req.uri().path().to_string(),
        filter,
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect(),
    };
    let index = {
        let mut all = shared.seen.lock().unwrap();
        all.push(seen.clone());
        all.len() - 1
    };
    let reply = (shared.script)(&seen, index);
    let body = match reply.body {
        ReplyBody::Empty => Body::empty(),
        ReplyBody::Json(v) => Body::from(v.to_string()),
        ReplyBody::Endless => Body::from_stream(futures::stream::repeat_with(|| {
            Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 0x10000]))
        })),
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap();
    for (name, value) in reply.headers {
        response.headers_mut().append(
            HeaderName::try_from(name).unwrap(),
            HeaderValue::try_from(value).unwrap(),
        );
    }
    response
}
