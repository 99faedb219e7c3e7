//! The compact counter (`tokens/bpe.rs`) against tiktoken-rs itself: the same count for every
//! text of a varied corpus, in every vocabulary.

use aoai_blaster_core::tokens::Encoding;

/// Texts that exercise each branch of the pre-tokenizers and the merge loop.
fn corpus() -> Vec<String> {
    let samples: Vec<String> = [
        "hello world",
        "",
        " ",
        "   ",
        "\n\n\n",
        "a  \n  b",
        "The quick brown fox jumps over the lazy dog. It's, they're, we'll, I'd, you've, she's.",
        "fn main() {\n    let x: Vec<u32> = (0..10).map(|i| i * 2).collect();\n    println!(\"{x:?}\");\n}\n",
        "def f(a, b):\n\treturn a ** b  # comment\n\n\n\nclass X:\n    pass\n",
        "日本語のテキストです。東京は晴れ。中文文本，北京天气很好。한국어 텍스트",
        "emoji 😀😃😄 👨‍👩‍👧‍👦 🏳️‍🌈 ✨🔥",
        "1234567890123456789012345678901234567890 3.14159 -42 1e10 0x1F",
        "     leading and trailing     ",
        "tabs\t\t\there\r\n\r\nwindows",
        "<|endoftext|> <|endofprompt|> <|fim_prefix|> special",
        "{\"role\":\"user\",\"content\":\"JSON here\",\"n\":[1,2,3]}",
        "Ünïcödé façade naïve café SCHÖN ÀÉÎÕÜ ǅ ǈ",
        "mixedCASEWordsAndHTTPServer XMLHttpRequest iPhone McDonald's DON'T",
        "Привет мир! Γειά σου Κόσμε! مرحبا بالعالم שלום עולם नमस्ते दुनिया",
        "a\u{0301}e\u{0308} combining marks and \u{200b}zero width\u{feff}",
        "////// ===== ----- ***** ~~~~~ ... !!! ???",
        "line1\n \nline2 \n\t\nline3   \n",
    ]
    .map(String::from)
    .to_vec();
    let mut corpus = samples.clone();
    // Long pieces: the merge loop over hundreds of bytes.
    corpus.push("a".repeat(3000));
    corpus.push("ab".repeat(700));
    corpus.push("9".repeat(1000));
    corpus.push(" ".repeat(500) + "x");
    corpus.push("\n".repeat(300));
    corpus.push("😀".repeat(200));
    corpus.push("漢字".repeat(300));
    corpus.push("Supercalifragilisticexpialidocious".repeat(20));
    // Everything together, and random strings of the corpus's characters.
    corpus.push(samples.join("\n").repeat(10));
    let chars: Vec<char> = samples.iter().flat_map(|text| text.chars()).collect();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for length in 0..1500 {
        let text = (0..length % 80)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chars[(state % chars.len() as u64) as usize]
            })
            .collect();
        corpus.push(text);
    }
    corpus
}

#[test]
fn counts_equal_tiktoken_rs_in_every_vocabulary() {
    let corpus = corpus();
    let references = [
        (Encoding::O200kBase, tiktoken_rs::o200k_base()),
        (Encoding::O200kHarmony, tiktoken_rs::o200k_harmony()),
        (Encoding::Cl100kBase, tiktoken_rs::cl100k_base()),
        (Encoding::P50kBase, tiktoken_rs::p50k_base()),
        (Encoding::P50kEdit, tiktoken_rs::p50k_edit()),
        (Encoding::R50kBase, tiktoken_rs::r50k_base()),
    ];
    for (encoding, reference) in references {
        let reference = reference.expect("tiktoken-rs builds its vocabulary");
        let mut tokens = 0;
        for text in &corpus {
            let expected = reference.count_ordinary(text) as u64;
            assert_eq!(
                encoding.count(text),
                Some(expected),
                "{} on {text:?}",
                encoding.name()
            );
            tokens += expected;
        }
        // The corpus is not trivial: thousands of tokens in every vocabulary.
        assert!(tokens > 20_000, "{}: {tokens} tokens", encoding.name());
    }
}
