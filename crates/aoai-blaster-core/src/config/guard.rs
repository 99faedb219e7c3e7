//! Checks on a config file's text before it is parsed for real: its size, the size YAML
//! aliases would expand it to ("billion laughs"), and TOML syntax errors reported without
//! quoting the file (its lines hold keys).

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// The largest config text read: a config is a few KiB; anything near this is not one.
pub(crate) const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// The most YAML nodes a config may expand to once aliases are resolved: a config with a
/// thousand deployments has some tens of thousands.
pub(crate) const MAX_YAML_NODES: u64 = 1_000_000;

/// `Err(message)` when `text` is too long to be a config.
pub(super) fn check_size(text: &str) -> Result<(), String> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(format!(
            "the text is {} bytes, more than the {MAX_CONFIG_BYTES} a config may have; check \
             that the path names the config file",
            text.len()
        ));
    }
    Ok(())
}

/// `Err(message)` when YAML aliases would expand `text` beyond [`MAX_YAML_NODES`] nodes
/// (nested anchors can make a few hundred bytes expand to gigabytes). Syntax errors are left
/// to the real parser, which reports them with their place.
pub(super) fn check_yaml_expansion(text: &str) -> Result<(), String> {
    let mut counter = NodeCounter::default();
    let mut parser = Parser::new_from_str(text);
    if parser.load(&mut counter, true).is_err() {
        return Ok(());
    }
    if counter.total > MAX_YAML_NODES {
        return Err(format!(
            "its aliases (`*name`) expand it to more than {MAX_YAML_NODES} values; a config \
             needs no such nesting: write the repeated parts out or use fewer aliases"
        ));
    }
    Ok(())
}

/// Counts the nodes a YAML stream expands to, from its events, without expanding it.
#[derive(Default)]
struct NodeCounter {
    /// Expanded size of each anchored node, by anchor id.
    anchors: Vec<u64>,
    /// Open collections: (anchor id, nodes so far including itself).
    open: Vec<(usize, u64)>,
    total: u64,
}

impl NodeCounter {
    /// A node of `size` nodes is complete: count it in its parent, remember it if anchored.
    fn close(&mut self, anchor: usize, size: u64) {
        if anchor > 0 {
            if self.anchors.len() <= anchor {
                self.anchors.resize(anchor + 1, 0);
            }
            self.anchors[anchor] = size;
        }
        match self.open.last_mut() {
            Some((_, parent)) => *parent = parent.saturating_add(size),
            None => self.total = self.total.saturating_add(size),
        }
    }
}

impl MarkedEventReceiver for NodeCounter {
    fn on_event(&mut self, event: Event, _mark: Marker) {
        match event {
            Event::Scalar(_, _, anchor, _) => self.close(anchor, 1),
            Event::Alias(anchor) => {
                let size = self.anchors.get(anchor).copied().unwrap_or(1);
                self.close(0, size);
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                self.open.push((anchor, 1));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((anchor, size)) = self.open.pop() {
                    self.close(anchor, size);
                }
            }
            _ => {}
        }
    }
}

/// `Err(message)` for a TOML syntax error, naming its line and column and the parser's
/// complaint, but never the line itself (it may hold an `api_key`).
pub(super) fn check_toml_syntax(text: &str) -> Result<(), String> {
    let Err(error) = toml::de::DeTable::parse(text) else {
        return Ok(());
    };
    let place = match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: ")
        }
        None => String::new(),
    };
    Err(format!("{place}{}", error.message().trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_aliases_are_refused_before_they_expand() {
        let mut laughs = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
        let mut previous = "a";
        for name in names {
            let refs = vec![format!("*{previous}"); 9].join(",");
            laughs.push_str(&format!("{name}: &{name} [{refs}]\n"));
            previous = name;
        }
        assert!(laughs.len() < 600, "a few hundred bytes: {}", laughs.len());
        let error = check_yaml_expansion(&laughs).expect_err("9^9 values");
        assert!(error.contains("aliases"), "{error}");
        // A config that reuses a block once or twice is fine.
        let reuse = "defaults: &d {backoff_base: 1, backoff_max: 10}\nx: *d\ny: *d\n";
        assert_eq!(check_yaml_expansion(reuse), Ok(()));
    }

    #[test]
    fn a_toml_syntax_error_names_the_place_but_not_the_line() {
        let text = "num_workers = 4\n[[deployments]]\napi_key = \"sk-secret-123\" oops\n";
        let error = check_toml_syntax(text).expect_err("bad syntax");
        assert!(error.starts_with("line 3, column "), "{error}");
        assert!(!error.contains("sk-secret"), "{error}");
        assert_eq!(check_toml_syntax("a = 1\n"), Ok(()));
    }

    #[test]
    fn a_huge_text_is_not_a_config() {
        let huge = "#".repeat(MAX_CONFIG_BYTES + 1);
        assert!(check_size(&huge).expect_err("too big").contains("bytes"));
        assert_eq!(check_size("a: 1"), Ok(()));
    }
}
