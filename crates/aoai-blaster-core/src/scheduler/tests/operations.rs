//! Jobs of each operation: where they may go, what they are charged, how quota paces them.

use std::time::Instant;

use serde_json::json;

use super::*;
use crate::embeddings::EmbeddingsRequest;
use crate::operation::Operation;
use crate::responses::ResponsesRequest;

/// The tokens each send among `effects` was charged, in order, and clears them.
fn charges(effects: &mut Vec<Effect<Job>>) -> Vec<(usize, u64)> {
    let charged = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send {
                endpoint, tokens, ..
            } => Some((*endpoint, *tokens)),
            _ => None,
        })
        .collect();
    effects.retain(|e| !matches!(e, Effect::Send { .. }));
    charged
}

/// An embeddings request of `inputs` token lists of `ids` ids each: exactly `inputs × ids`
/// input tokens, whatever the tokenizer.
fn token_lists(inputs: usize, ids: usize) -> EmbeddingsRequest {
    EmbeddingsRequest::new(json!(vec![vec![1; ids]; inputs]))
}

const MIXED: [&str; 3] = [
    "{name: chat}",
    "{name: emb, model: embed-3, operations: [embeddings]}",
    "{name: v1, model: gpt-5, api_version: v1, operations: [chat, responses], max_completion_tokens: 300}",
];

#[test]
fn each_job_goes_only_where_its_operation_is_taken() {
    let t0 = Instant::now();
    let mut s = scheduler(&MIXED, "");
    let mut fx = Vec::new();
    for _ in 0..4 {
        s.submit(
            t0,
            job("e"),
            token_lists(1, 3),
            JobOptions::default(),
            &mut fx,
        );
        s.submit(
            t0,
            job("r"),
            ResponsesRequest::new("hi"),
            JobOptions::default(),
            &mut fx,
        );
    }
    let placed = charges(&mut fx);
    assert_eq!(placed.len(), 8);
    for (index, (endpoint, _)) in placed.iter().enumerate() {
        let expected = if index % 2 == 0 { 1 } else { 2 };
        assert_eq!(*endpoint, expected, "send {index}");
    }
    // Chat jobs go to both chat deployments, never to the embeddings one.
    for _ in 0..6 {
        s.submit(t0, job("c"), small(), JobOptions::default(), &mut fx);
    }
    let chat: Vec<usize> = charges(&mut fx).iter().map(|c| c.0).collect();
    assert_eq!(chat.len(), 6);
    assert!(chat.iter().all(|e| *e != 1), "{chat:?}");
    assert!(chat.contains(&0) && chat.contains(&2), "{chat:?}");
}

#[test]
fn a_job_no_deployment_takes_fails_at_once_naming_what_each_takes() {
    let t0 = Instant::now();
    let mut s = scheduler(
        &["{name: east}", "{name: emb, operations: [embeddings]}"],
        "",
    );
    let mut fx = Vec::new();
    s.submit(
        t0,
        job("r"),
        ResponsesRequest::new("hi"),
        JobOptions::default(),
        &mut fx,
    );
    s.submit(
        t0,
        job("pinned"),
        token_lists(1, 1),
        pinned("east"),
        &mut fx,
    );
    let failures = failed(&fx);
    assert_eq!(failures.len(), 2);
    assert_eq!(failures[0].0, "r");
    assert_eq!(
        failures[0].1.kind,
        JobErrorKind::UnsupportedOperation {
            operation: Operation::Responses,
            offered: "'east' takes chat; 'emb' takes embeddings".into(),
        }
    );
    assert_eq!(failures[0].1.code(), "unsupported_operation");
    let message = failures[0].1.to_string();
    assert!(message.contains("api_version: v1"), "{message}");
    assert_eq!(
        failures[1].1.kind,
        JobErrorKind::UnsupportedOperation {
            operation: Operation::Embeddings,
            offered: "'east' takes chat".into(),
        }
    );
    assert!(sends(&mut fx).is_empty());
    assert!(s.is_idle());
}

#[test]
fn embeddings_are_charged_their_input_tokens_and_responses_input_plus_output() {
    let t0 = Instant::now();
    let mut s = scheduler(&MIXED, "");
    let mut fx = Vec::new();
    s.submit(
        t0,
        job("ids"),
        token_lists(3, 7),
        JobOptions::default(),
        &mut fx,
    );
    // Text: the larger of the tokenizer's count and a quarter of the characters, per input.
    let texts = EmbeddingsRequest::new(json!(["abcd".repeat(5), "3 1 4 1 5"]));
    let digits = crate::tokens::Encoding::O200kBase
        .count("3 1 4 1 5")
        .unwrap_or(0);
    assert!(digits > 3, "spaced digits take more tokens than chars / 4");
    s.submit(t0, job("texts"), texts, JobOptions::default(), &mut fx);
    let hi = crate::quota::prompt_charge(
        "o200k_base",
        &[json!({"role": "user", "content": "hi"})],
        None,
    );
    s.submit(
        t0,
        job("r-default"),
        ResponsesRequest::new("hi"),
        JobOptions::default(),
        &mut fx,
    );
    let capped = ResponsesRequest::new("hi").option("max_output_tokens", 40);
    s.submit(t0, job("r-capped"), capped, JobOptions::default(), &mut fx);
    assert_eq!(
        charges(&mut fx),
        vec![(1, 21), (1, 5 + digits), (2, hi + 300), (2, hi + 40)]
    );
}

#[test]
fn embeddings_tpm_paces_by_input_tokens_and_a_job_over_it_never_fits() {
    let t0 = Instant::now();
    let mut s = scheduler(
        &["{name: emb, operations: [embeddings], tpm_limit: 100, rpm_limit: 600}"],
        "",
    );
    let mut fx = Vec::new();
    // 2 × 20 = 40 tokens a job: two fit in the minute, the third waits for the window.
    for name in ["a", "b"] {
        assert_eq!(
            s.submit(
                t0,
                job(name),
                token_lists(2, 20),
                JobOptions::default(),
                &mut fx
            ),
            None
        );
    }
    let wake = s
        .submit(
            t0,
            job("c"),
            token_lists(2, 20),
            JobOptions::default(),
            &mut fx,
        )
        .expect("the third job waits for tokens to free up");
    assert_eq!(charges(&mut fx), vec![(0, 40), (0, 40)]);
    assert!(
        wake > t0 + 50 * S,
        "tokens free up a minute after their charge: {wake:?}"
    );
    assert!(s.wake(wake - MS, &mut fx).is_some());
    assert!(sends(&mut fx).is_empty(), "not before the wake-up");
    s.wake(wake, &mut fx);
    assert_eq!(charges(&mut fx), vec![(0, 40)]);
    // 101 input tokens can never fit in 100 TPM: no wait cures that.
    s.submit(
        wake,
        job("huge"),
        token_lists(1, 101),
        JobOptions::default(),
        &mut fx,
    );
    assert_eq!(
        failed(&fx)[0].1.kind,
        JobErrorKind::NeverFits {
            tokens: 101,
            largest_capacity: 100
        }
    );
}
