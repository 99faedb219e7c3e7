//! Tests of `input` (tests).

use super::*;
use serde_json::json;

#[test]
fn the_module_example_holds() {
    let names = DeploymentNames::new([("east", "gpt-4o"), ("west", "gpt-4o-mini")]);
    let mut parser = LineParser::new(names);
    let line = r#"{"custom_id": "r1", "method": "POST", "url": "/chat/completions",
                  "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}}"#;
    let ParsedLine::Request(request) = parser.parse(1, line) else {
        panic!()
    };
    assert_eq!(request.pin.as_deref(), Some("west"));
    assert!(request.body.get("model").is_none());

    let ParsedLine::Invalid(error) = parser.parse(2, line) else {
        panic!()
    };
    assert_eq!(error.code.as_str(), "duplicate_custom_id");
}

fn parser() -> LineParser {
    LineParser::new(DeploymentNames::new([
        ("east", "gpt-4o"),
        ("west", "gpt-4o-mini"),
        ("gpt-4o-mini", "other"),
    ]))
}

fn line(custom_id: Value, method: Value, url: Value, body: Value) -> String {
    json!({"custom_id": custom_id, "method": method, "url": url, "body": body}).to_string()
}

fn good(id: &str) -> String {
    line(
        json!(id),
        json!("POST"),
        json!("/chat/completions"),
        json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}),
    )
}

fn error_of(parsed: ParsedLine) -> InputError {
    match parsed {
        ParsedLine::Invalid(error) => error,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn request_of(parsed: ParsedLine) -> BatchRequest {
    match parsed {
        ParsedLine::Request(request) => request,
        other => panic!("expected a request, got {other:?}"),
    }
}

#[test]
fn valid_line_becomes_a_request() {
    let request = request_of(parser().parse(7, &good("a")));
    assert_eq!(request.line, 7);
    assert_eq!(request.custom_id, "a");
    assert_eq!(request.body["max_tokens"], 5);
    assert_eq!(request.body["messages"][0]["content"], "Hi");
    assert_eq!(request.pin, None);
    assert!(!request.stream);
}

#[test]
fn v1_url_and_lowercase_method_are_accepted() {
    let text = line(
        json!("a"),
        json!("post"),
        json!("/v1/chat/completions"),
        json!({"messages": []}),
    );
    assert_eq!(request_of(parser().parse(1, &text)).custom_id, "a");
}

#[test]
fn blank_lines_are_skipped() {
    assert_eq!(parser().parse(3, "   \t"), ParsedLine::Blank);
    assert_eq!(parser().parse(3, ""), ParsedLine::Blank);
}

#[test]
fn invalid_json_names_the_line() {
    let error = error_of(parser().parse(12, "{\"custom_id\": \"a\""));
    assert_eq!(error.code, InputErrorCode::InvalidJson);
    assert_eq!(error.line, 12);
    assert!(
        error.message.starts_with("line 12: not valid JSON"),
        "{}",
        error.message
    );
    assert_eq!(error.custom_id, None);
}

#[test]
fn a_json_value_that_is_not_an_object_is_invalid_json() {
    let error = error_of(parser().parse(2, "[1, 2]"));
    assert_eq!(error.code, InputErrorCode::InvalidJson);
    assert!(error.message.contains("got a list"), "{}", error.message);
}

#[test]
fn custom_id_must_be_a_non_empty_string() {
    let body = json!({"messages": []});
    let url = json!("/chat/completions");
    for (id, expect) in [
        (json!(17), "must be a string, got a number"),
        (json!(""), "is empty"),
        (Value::Null, "must be a string, got null"),
    ] {
        let text = line(id, json!("POST"), url.clone(), body.clone());
        let error = error_of(parser().parse(4, &text));
        assert_eq!(error.code, InputErrorCode::MissingCustomId);
        assert!(error.message.contains(expect), "{}", error.message);
    }
    let text = json!({"method": "POST", "url": url, "body": body}).to_string();
    let error = error_of(parser().parse(5, &text));
    assert_eq!(error.code, InputErrorCode::MissingCustomId);
    assert!(error.message.starts_with("line 5: no \"custom_id\""));
}

#[test]
fn second_valid_line_with_an_id_is_a_duplicate() {
    let mut parser = parser();
    request_of(parser.parse(1, &good("a")));
    let error = error_of(parser.parse(2, &good("a")));
    assert_eq!(error.code, InputErrorCode::DuplicateCustomId);
    assert_eq!(error.custom_id.as_deref(), Some("a"));
    assert!(error.message.contains("\"a\" was already used"));
    request_of(parser.parse(3, &good("b")));
    assert_eq!(parser.claimed(), 2);
}

#[test]
fn an_invalid_line_does_not_claim_its_id() {
    let mut parser = parser();
    let bad = line(
        json!("a"),
        json!("GET"),
        json!("/chat/completions"),
        json!({"messages": []}),
    );
    assert_eq!(
        error_of(parser.parse(1, &bad)).code,
        InputErrorCode::InvalidMethod
    );
    assert_eq!(request_of(parser.parse(2, &good("a"))).line, 2);
}

#[test]
fn method_url_and_body_are_checked_in_order() {
    let messages = json!({"messages": []});
    let url = json!("/chat/completions");
    let cases = [
        (
            line(json!("a"), json!("GET"), json!("/embeddings"), json!(1)),
            InputErrorCode::InvalidMethod,
            "got \"GET\"",
        ),
        (
            json!({"custom_id": "a", "url": url, "body": messages}).to_string(),
            InputErrorCode::InvalidMethod,
            "no \"method\"",
        ),
        (
            line(json!("a"), json!("POST"), json!("/completions"), json!(1)),
            InputErrorCode::InvalidUrl,
            "got \"/completions\"",
        ),
        (
            json!({"custom_id": "a", "method": "POST", "body": messages}).to_string(),
            InputErrorCode::InvalidUrl,
            "no \"url\"",
        ),
        (
            line(json!("a"), json!("POST"), url.clone(), json!("hi")),
            InputErrorCode::InvalidBody,
            "got a string",
        ),
        (
            line(
                json!("a"),
                json!("POST"),
                url.clone(),
                json!({"prompt": "x"}),
            ),
            InputErrorCode::InvalidBody,
            "no \"messages\"",
        ),
        (
            line(
                json!("a"),
                json!("POST"),
                url.clone(),
                json!({"messages": "x"}),
            ),
            InputErrorCode::InvalidBody,
            "must be a list",
        ),
        (
            json!({"custom_id": "a", "method": "POST", "url": url}).to_string(),
            InputErrorCode::InvalidBody,
            "no \"body\"",
        ),
    ];
    for (text, code, expect) in cases {
        let error = error_of(parser().parse(9, &text));
        assert_eq!(error.code, code, "{text}");
        assert!(error.message.contains(expect), "{}", error.message);
        assert_eq!(error.custom_id.as_deref(), Some("a"));
    }
}

#[test]
fn long_values_are_shortened_in_messages() {
    let url = "/x".repeat(100);
    let text = line(
        json!("a"),
        json!("POST"),
        json!(url),
        json!({"messages": []}),
    );
    let error = error_of(parser().parse(1, &text));
    assert!(error.message.len() < 200, "{}", error.message);
    assert!(error.message.ends_with("\"..."), "{}", error.message);
}

#[test]
fn model_pins_by_name_first_then_by_model() {
    let mut parser = parser();
    let with_model = |id: &str, model: &str| {
        line(
            json!(id),
            json!("POST"),
            json!("/chat/completions"),
            json!({"model": model, "messages": []}),
        )
    };
    // "gpt-4o-mini" is the `name` of the third deployment and the `model` of the second:
    // the name wins.
    let by_name = request_of(parser.parse(1, &with_model("a", "gpt-4o-mini")));
    assert_eq!(by_name.pin.as_deref(), Some("gpt-4o-mini"));
    let by_model = request_of(parser.parse(2, &with_model("b", "gpt-4o")));
    assert_eq!(by_model.pin.as_deref(), Some("east"));
    let unknown = request_of(parser.parse(3, &with_model("c", "gpt-5")));
    assert_eq!(unknown.pin, None);
    for request in [by_name, by_model, unknown] {
        assert!(request.body.get("model").is_none());
    }
}

#[test]
fn stream_true_is_taken_out_of_the_body() {
    let text = line(
        json!("a"),
        json!("POST"),
        json!("/chat/completions"),
        json!({"messages": [], "stream": true, "stream_options": {"include_usage": true}}),
    );
    let request = request_of(parser().parse(1, &text));
    assert!(request.stream);
    assert!(request.body.get("stream").is_none());
    assert_eq!(request.body["stream_options"]["include_usage"], true);
}

#[test]
fn a_resuming_parser_says_how_each_id_was_answered_once() {
    let mut answers = IdIndex::default();
    answers.insert(IdFingerprint::of("ok"), IdTag::Succeeded);
    answers.insert(IdFingerprint::of("bad"), IdTag::Failed);
    let mut parser = LineParser::resuming(DeploymentNames::default(), answers);
    let ok = request_of(parser.parse(1, &good("ok")));
    assert_eq!(ok.previous, Some(PreviousAnswer::Succeeded));
    let bad = request_of(parser.parse(2, &good("bad")));
    assert_eq!(bad.previous, Some(PreviousAnswer::Failed));
    let new = request_of(parser.parse(3, &good("new")));
    assert_eq!(new.previous, None);
    // A second line with an answered id is a duplicate, not a second skip.
    let again = error_of(parser.parse(4, &good("ok")));
    assert_eq!(again.code, InputErrorCode::DuplicateCustomId);
    assert_eq!(parser.claimed(), 3);
    // The answers left the table as the lines claimed their ids: one entry per id.
    assert_eq!(parser.index.len(), 3);
}

#[test]
fn found_verdicts_are_used_by_line_and_nothing_is_remembered() {
    use crate::batch::duplicates::{IdRecord, IdSorter};
    let lines = [good("a"), good("b"), good("a"), good("c"), good("b")];
    // The finding pass: a validator sees every line as new; "c" was answered before.
    let mut validator = LineParser::validator(DeploymentNames::default());
    let dir = tempfile::tempdir().unwrap();
    let mut sorter = IdSorter::new(dir.path(), 2);
    sorter
        .push(IdRecord::answer(
            IdFingerprint::of("c"),
            PreviousAnswer::Succeeded,
        ))
        .unwrap();
    for (number, text) in (1u64..).zip(&lines) {
        let request = request_of(validator.parse(number, text));
        let id = IdFingerprint::of(&request.custom_id);
        sorter.push(IdRecord::line(id, number, true)).unwrap();
    }
    assert!(validator.index.is_empty());
    let verdicts = sorter.finish().unwrap();
    // The run's pass.
    let mut parser = LineParser::new(DeploymentNames::default());
    parser.set_duplicate_check(DuplicateCheck::Found(verdicts));
    let seen: Vec<String> = (1u64..)
        .zip(&lines)
        .map(|(number, text)| match parser.parse(number, text) {
            ParsedLine::Invalid(error) => error.code.to_string(),
            ParsedLine::Request(request) => format!("{:?}", request.previous),
            ParsedLine::Blank => "blank".into(),
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            "None",
            "None",
            "duplicate_custom_id",
            "Some(Succeeded)",
            "duplicate_custom_id"
        ]
    );
    assert_eq!(parser.claimed(), 3);
    assert!(parser.index.is_empty());
}

#[test]
fn codes_round_trip() {
    for code in InputErrorCode::ALL {
        assert_eq!(InputErrorCode::parse(code.as_str()), Some(code));
        assert_eq!(code.to_string(), code.as_str());
    }
    assert_eq!(InputErrorCode::parse("server_error"), None);
}

#[test]
fn each_url_names_its_operation_and_the_body_it_needs() {
    let mut parser = parser();
    let cases = [
        ("/chat/completions", Operation::Chat),
        ("/v1/chat/completions", Operation::Chat),
        ("/embeddings", Operation::Embeddings),
        ("/v1/embeddings", Operation::Embeddings),
        ("/responses", Operation::Responses),
        ("/v1/responses", Operation::Responses),
    ];
    for (number, (url, operation)) in (1u64..).zip(cases) {
        let body = match operation {
            Operation::Chat => json!({"messages": [], "model": "east"}),
            _ => json!({"input": ["a", "b"], "model": "east", "stream": true}),
        };
        let request =
            request_of(parser.parse(number, &line(json!(url), json!("POST"), json!(url), body)));
        assert_eq!(request.operation, operation, "{url}");
        assert_eq!(
            request.pin.as_deref(),
            Some("east"),
            "pinned by body.model: {url}"
        );
        assert!(request.body.get("model").is_none());
    }
    for (url, body, expect) in [
        (
            "/embeddings",
            json!({"messages": []}),
            "has no \"input\" (embeddings needs a string or a list)",
        ),
        (
            "/v1/responses",
            json!({"input": 3}),
            "\"body.input\" must be a string or a list, got a number",
        ),
        (
            "/responses",
            json!("hi"),
            "must be a JSON object with an \"input\" string or list",
        ),
        (
            "/chat/completions",
            json!({"input": "x"}),
            "has no \"messages\"",
        ),
    ] {
        let error = error_of(parser.parse(99, &line(json!("z"), json!("POST"), json!(url), body)));
        assert_eq!(error.code, InputErrorCode::InvalidBody, "{url}");
        assert!(error.message.contains(expect), "{url}: {}", error.message);
    }
}
