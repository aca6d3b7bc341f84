//! `keyword` and `jsonQuery` checks against a real hyper server on 127.0.0.1.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kubekuma_agent::checks::{self, CheckContext};
use kubekuma_agent::secrets::SecretStore;
use kubekuma_crds::EffectiveSettings;
use kubekuma_crds::MonitorSpec;
use kubekuma_crds::results::{CheckOutcome, FailureReason};

/// Non-ASCII text whose lowercase form is longer in bytes (`İ` is 2 bytes, `i̇` 3).
const UNICODE_PAGE: &str = "İİİİ İstanbul — État: OPÉRATIONNEL, Status: DOWN for maintenance";

pub(crate) async fn server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let (status, body): (u16, &'static str) = match req.uri().path() {
                        "/json" => (
                            200,
                            r#"{"status":"degraded","count":5,"version":"200","tags":["a","b"],"nested":{"ok":true}}"#,
                        ),
                        "/html" => (
                            200,
                            "<html><h1>Welcome to the Shop</h1><p>maintenance banner</p></html>",
                        ),
                        "/text" => (200, "plain text, not json"),
                        "/unicode" => (200, UNICODE_PAGE),
                        _ => (503, "unavailable"),
                    };
                    let mut r =
                        hyper::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

async fn run(yaml: &str) -> CheckOutcome {
    let spec: MonitorSpec = serde_yaml_ng::from_str(yaml).unwrap();
    let ctx = CheckContext::new(
        EffectiveSettings::default(),
        Arc::new(SecretStore::default()),
    );
    checks::run_spec(&ctx, "ns", &spec, Duration::from_secs(5)).await
}

fn keyword(port: u16, extra: &str) -> String {
    format!("type: keyword\ntarget:\n  keyword:\n    url: http://127.0.0.1:{port}/html\n{extra}")
}

#[tokio::test]
async fn keyword_found_missing_inverted_regex_and_case() {
    let port = server().await;
    assert!(run(&keyword(port, "    keyword: Welcome\n")).await.up);
    let o = run(&keyword(port, "    keyword: Goodbye\n")).await;
    assert_eq!(o.reason, Some(FailureReason::Body));
    let msg = o.message.unwrap();
    assert!(
        msg.starts_with(
            "keyword \"Goodbye\" not found in the body (starts with \"<html><h1>Welcome"
        ),
        "{msg}"
    );
    let o = run(&keyword(
        port,
        "    keyword: maintenance\n    invert: true\n",
    ))
    .await;
    assert_eq!(o.reason, Some(FailureReason::Body));
    assert!(
        o.message
            .as_deref()
            .unwrap()
            .contains("found in the body, which inverted means down: …"),
        "{:?}",
        o.message
    );
    assert!(
        run(&keyword(
            port,
            "    keyword: absent-word\n    invert: true\n"
        ))
        .await
        .up
    );
    assert!(
        run(&keyword(
            port,
            "    keyword: 'Welcome to the \\w+'\n    regex: true\n"
        ))
        .await
        .up
    );
    assert!(
        !run(&keyword(port, "    keyword: welcome to the shop\n"))
            .await
            .up
    );
    assert!(
        run(&keyword(
            port,
            "    keyword: welcome to the shop\n    caseInsensitive: true\n"
        ))
        .await
        .up
    );
}

#[tokio::test]
async fn keyword_case_insensitive_in_non_ascii_text_quotes_the_right_excerpt() {
    let port = server().await;
    let unicode = |extra: &str| {
        format!(
            "type: keyword\ntarget:\n  keyword:\n    url: http://127.0.0.1:{port}/unicode\n{extra}"
        )
    };
    assert!(
        run(&unicode(
            "    keyword: 'état: opérationnel'\n    caseInsensitive: true\n"
        ))
        .await
        .up
    );
    let o = run(&unicode(
        "    keyword: STATUS\n    caseInsensitive: true\n    invert: true\n",
    ))
    .await;
    assert_eq!(o.reason, Some(FailureReason::Body));
    assert_eq!(
        o.message.as_deref(),
        Some(
            "keyword \"STATUS\" found in the body, which inverted means down: …tat: OPÉRATIONNEL, Status: DOWN for maintenan…"
        )
    );
    // A long keyword is quoted shortened.
    let long = "ü".repeat(100);
    let o = run(&unicode(&format!(
        "    keyword: {long}\n    caseInsensitive: true\n"
    )))
    .await;
    assert_eq!(o.reason, Some(FailureReason::Body));
    let msg = o.message.unwrap();
    assert!(
        msg.starts_with(&format!("keyword \"{}…\" not found", "ü".repeat(60))),
        "{msg}"
    );
}

#[tokio::test]
async fn keyword_in_the_original_form_and_status_first() {
    let port = server().await;
    let original = |crit: &str| {
        format!(
            "type: keyword\ntarget:\n  http:\n    url: http://127.0.0.1:{port}/html\nsuccessCriteria:\n  keyword:\n{crit}"
        )
    };
    assert!(run(&original("    contains: [Welcome, Shop]\n")).await.up);
    assert_eq!(
        run(&original("    contains: [Welcome, Basket]\n"))
            .await
            .reason,
        Some(FailureReason::Body)
    );
    assert_eq!(
        run(&original("    notContains: [maintenance]\n"))
            .await
            .reason,
        Some(FailureReason::Body)
    );
    let o = run(&format!("type: keyword\ntarget:\n  keyword:\n    url: http://127.0.0.1:{port}/down\n    keyword: unavailable\n")).await;
    assert_eq!(
        o.reason,
        Some(FailureReason::Status),
        "the HTTP criteria are judged first"
    );
}

fn query(port: u16, path: &str, rest: &str) -> String {
    format!(
        "type: jsonQuery\ntarget:\n  jsonQuery:\n    url: http://127.0.0.1:{port}{path}\n{rest}"
    )
}

#[tokio::test]
async fn json_query_comparisons() {
    let port = server().await;
    let ok = |rest: &'static str| query(port, "/json", rest);
    assert!(
        run(&ok("    query: $.status\n    expected: degraded\n"))
            .await
            .up
    );
    let o = run(&ok("    query: $.status\n    expected: ok\n")).await;
    assert_eq!(o.reason, Some(FailureReason::Assertion));
    assert_eq!(
        o.message.as_deref(),
        Some("query $.status: found \"degraded\", expected equals \"ok\"")
    );
    assert!(
        run(&ok(
            "    query: $.status\n    expected: ok\n    comparison: notEquals\n"
        ))
        .await
        .up
    );
    assert!(
        run(&ok(
            "    query: $.count\n    expected: 3\n    comparison: greaterThan\n"
        ))
        .await
        .up
    );
    assert!(
        !run(&ok(
            "    query: $.count\n    expected: 5\n    comparison: lessThan\n"
        ))
        .await
        .up
    );
    assert!(
        run(&ok(
            "    query: $.count\n    expected: 5\n    comparison: lessThanOrEqual\n"
        ))
        .await
        .up
    );
    assert!(
        run(&ok("    query: $.version\n    expected: 200\n"))
            .await
            .up,
        "\"200\" equals 200"
    );
    assert!(
        run(&ok(
            "    query: $.tags\n    expected: b\n    comparison: contains\n"
        ))
        .await
        .up
    );
    assert!(
        run(&ok("    query: $.nested.ok\n    comparison: exists\n"))
            .await
            .up
    );
    let o = run(&ok("    query: $.missing\n    comparison: exists\n")).await;
    assert_eq!(
        o.message.as_deref(),
        Some("query $.missing matched nothing")
    );
    let o = run(&ok(
        "    query: $.status\n    expected: 1\n    comparison: greaterThan\n",
    ))
    .await;
    assert_eq!(
        o.message.as_deref(),
        Some("query $.status: found \"degraded\", which is not a number")
    );
    let o = run(&query(
        port,
        "/text",
        "    query: $.status\n    comparison: exists\n",
    ))
    .await;
    assert_eq!(o.reason, Some(FailureReason::Body));
    assert!(
        o.message
            .as_deref()
            .unwrap()
            .starts_with("the body is not JSON"),
        "{:?}",
        o.message
    );
}
