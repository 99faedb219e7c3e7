//! Hostile input lines: any text, and JSON objects whose fields have every wrong type.

use super::*;
use proptest::prelude::*;
use serde_json::json;

fn parser() -> LineParser {
    LineParser::new(DeploymentNames::new([
        ("east", "gpt-4o"),
        ("west", "gpt-4o-mini"),
    ]))
}

/// A field value: the right one, or one of every wrong kind.
fn field(good: &'static [&'static str]) -> impl Strategy<Value = Option<Value>> {
    prop::option::weighted(
        0.9,
        prop_oneof![
            3 => prop::sample::select(good).prop_map(Value::from),
            1 => Just(Value::Null),
            1 => any::<bool>().prop_map(Value::from),
            1 => any::<i64>().prop_map(Value::from),
            1 => any::<f64>().prop_map(Value::from),
            1 => ".{0,70}".prop_map(Value::from),
            1 => Just(json!([])),
            1 => Just(json!({})),
        ],
    )
}

fn body() -> impl Strategy<Value = Option<Value>> {
    let messages = prop_oneof![
        3 => Just(json!([{"role": "user", "content": "Hi"}])),
        1 => Just(json!("Hi")),
        1 => Just(Value::Null),
    ];
    let input = prop_oneof![
        Just(json!("Hi")),
        Just(json!(["a", "b"])),
        Just(json!(3)),
        Just(Value::Null),
    ];
    let model = prop_oneof![
        Just(json!("east")),
        Just(json!("gpt-4o-mini")),
        Just(json!("gpt-5")),
        Just(json!(7)),
    ];
    prop::option::weighted(
        0.9,
        prop_oneof![
            4 => (prop::option::of(messages), prop::option::of(input), prop::option::of(model), prop::option::of(any::<bool>()))
                .prop_map(|(messages, input, model, stream)| {
                    let mut body = Map::new();
                    for (key, value) in [("messages", messages), ("input", input), ("model", model), ("stream", stream.map(Value::from))] {
                        if let Some(value) = value {
                            body.insert(key.to_owned(), value);
                        }
                    }
                    Value::Object(body)
                }),
            1 => Just(json!([])),
            1 => Just(json!("body")),
        ],
    )
}

/// A line object: each field present or not, right or wrong.
fn line_object() -> impl Strategy<Value = Map<String, Value>> {
    (
        field(&["a", "b", "c", ""]),
        field(&["POST", "post", "GET"]),
        field(&[
            "/chat/completions",
            "/v1/chat/completions",
            "/embeddings",
            "/v1/responses",
            "/completions",
        ]),
        body(),
    )
        .prop_map(|(id, method, url, body)| {
            let mut object = Map::new();
            for (key, value) in [
                ("custom_id", id),
                ("method", method),
                ("url", url),
                ("body", body),
            ] {
                if let Some(value) = value {
                    object.insert(key.to_owned(), value);
                }
            }
            object
        })
}

/// The code the documented checks give `object`, in their order (`None`: valid), with
/// `claimed` the ids earlier valid lines claimed.
fn expected_code(object: &Map<String, Value>, claimed: &[String]) -> Option<InputErrorCode> {
    let id = match object.get("custom_id") {
        Some(Value::String(id)) if !id.is_empty() => id,
        _ => return Some(InputErrorCode::MissingCustomId),
    };
    if claimed.contains(id) {
        return Some(InputErrorCode::DuplicateCustomId);
    }
    match object.get("method") {
        Some(Value::String(m)) if m.eq_ignore_ascii_case("POST") => {}
        _ => return Some(InputErrorCode::InvalidMethod),
    }
    let url = object.get("url").and_then(Value::as_str);
    let Some((_, operation)) = ACCEPTED_URLS.iter().find(|(known, _)| Some(*known) == url) else {
        return Some(InputErrorCode::InvalidUrl);
    };
    let body = object.get("body").filter(|b| b.is_object());
    let valid = match operation {
        Operation::Chat => body
            .and_then(|b| b.get("messages"))
            .is_some_and(Value::is_array),
        _ => body
            .and_then(|b| b.get("input"))
            .is_some_and(|input| input.is_string() || input.is_array()),
    };
    (!valid).then_some(InputErrorCode::InvalidBody)
}

proptest! {
    #![proptest_config(aoai_testkit::fuzz_config())]

    /// Any text: blank, a request or an error that names the line; never a panic.
    #[test]
    fn any_text_is_a_request_or_an_error_naming_its_line(
        line in 1u64..u64::MAX,
        text in prop_oneof![".{0,200}", "\\{\"custom_id\": ?.{0,40}\\}?", "[{}\\[\\]\":, 0-9a-z]{0,60}"],
    ) {
        match parser().parse(line, &text) {
            ParsedLine::Blank => prop_assert!(text.trim().is_empty()),
            ParsedLine::Request(request) => {
                prop_assert_eq!(request.line, line);
                prop_assert!(!request.custom_id.is_empty());
                let key = match request.operation {
                    Operation::Chat => "messages",
                    _ => "input",
                };
                prop_assert!(request.body.get(key).is_some_and(|v| v.is_array() || (key == "input" && v.is_string())));
            }
            ParsedLine::Invalid(error) => {
                prop_assert_eq!(error.line, line);
                let prefix = format!("line {line}: ");
                prop_assert!(error.message.starts_with(&prefix), "{}", error.message);
            }
        }
    }

    /// Lines of hostile objects, ids reused: each gets the code the documented checks give
    /// it, in their order; a request loses `model` and `stream`; only valid lines claim ids.
    #[test]
    fn hostile_objects_get_the_documented_code(
        objects in prop::collection::vec(line_object(), 1..12),
    ) {
        let mut parser = parser();
        let mut claimed = Vec::new();
        for (number, object) in (1u64..).zip(&objects) {
            let text = Value::Object(object.clone()).to_string();
            let expected = expected_code(object, &claimed);
            match parser.parse(number, &text) {
                ParsedLine::Request(request) => {
                    prop_assert_eq!(expected, None, "{}", text);
                    prop_assert!(request.body.get("model").is_none());
                    prop_assert!(request.body.get("stream").is_none());
                    prop_assert_eq!(
                        request.stream,
                        object["body"].get("stream") == Some(&Value::Bool(true))
                    );
                    claimed.push(request.custom_id);
                }
                ParsedLine::Invalid(error) => {
                    prop_assert_eq!(Some(error.code), expected, "{}", error.message);
                    prop_assert_eq!(error.line, number);
                    let prefix = format!("line {number}: ");
                    prop_assert!(error.message.starts_with(&prefix), "{}", error.message);
                    prop_assert!(error.message.len() < 400, "{}", error.message);
                }
                ParsedLine::Blank => prop_assert!(false, "{text} is not blank"),
            }
        }
        prop_assert_eq!(parser.claimed(), claimed.len());
    }
}
