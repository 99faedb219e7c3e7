//! [`SharedKeys`]: the Redis keys of one deployment's shared quota and health.

/// The Redis keys of one deployment: `<prefix>:{<host>[:<port>][/<path>]/<deployment>}:<what>`.
///
/// The identity is the Azure resource's host (and port and path, when given) and the
/// deployment name, so two configs that name the same Azure deployment differently (`name`)
/// share it, and two deployments of the same name on different resources do not. The braces are
/// a Redis Cluster hash tag: every key of one deployment lands in the same slot, as the scripts
/// that touch several of them need.
///
/// ```
/// use aoai_blaster_core::shared::SharedKeys;
/// let keys = SharedKeys::new("team-a", "https://My-Res.openai.azure.com/", "gpt-4o");
/// assert_eq!(keys.identity(), "my-res.openai.azure.com/gpt-4o");
/// assert_eq!(keys.minute(), "team-a:{my-res.openai.azure.com/gpt-4o}:minute");
/// let local = SharedKeys::new("p", "http://127.0.0.1:8080/", "m");
/// assert_eq!(local.identity(), "127.0.0.1:8080/m");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SharedKeys {
    identity: String,
    base: String,
}

impl SharedKeys {
    /// The keys under `prefix` of deployment `deployment` (the Azure deployment name, config
    /// `model`) on `endpoint` (a validated resource URL).
    pub fn new(prefix: &str, endpoint: &str, deployment: &str) -> Self {
        let identity = format!("{}/{deployment}", resource_of(endpoint));
        SharedKeys {
            base: format!("{prefix}:{{{identity}}}"),
            identity,
        }
    }

    /// `host[:port][/path]/deployment`.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Sorted set: lease id by the instant (ms) it stops counting in the minute span.
    pub fn minute(&self) -> String {
        format!("{}:minute", self.base)
    }

    /// Sorted set: lease id by the instant (ms) its requests stop counting in the short window.
    pub fn window(&self) -> String {
        format!("{}:window", self.base)
    }

    /// Hash: lease id to `"<tokens> <requests> <granted ms>"`.
    pub fn leases(&self) -> String {
        format!("{}:leases", self.base)
    }

    /// Counter: the last lease id handed out.
    pub fn sequence(&self) -> String {
        format!("{}:seq", self.base)
    }

    /// Hash: what the live leases add up to (`t` tokens and `rm` requests in the minute span,
    /// `rw` requests in the short window), kept by the scripts as records come and go.
    pub fn totals(&self) -> String {
        format!("{}:totals", self.base)
    }

    /// The keys of a deployment's leases, in the order the scripts take them: minute, window,
    /// leases, sequence, totals.
    pub fn quota(&self) -> [String; 5] {
        [
            self.minute(),
            self.window(),
            self.leases(),
            self.sequence(),
            self.totals(),
        ]
    }

    /// String with expiry: Azure asked every process to wait (a 429's Retry-After).
    pub fn cooling(&self) -> String {
        format!("{}:cooling", self.base)
    }

    /// String with expiry: disabled for a reason no wait cures (the reason is the value).
    pub fn disabled(&self) -> String {
        format!("{}:disabled", self.base)
    }

    /// String with expiry: a process's probe succeeded lately (a disable was lifted).
    pub fn recovered(&self) -> String {
        format!("{}:recovered", self.base)
    }
}

/// `host[:port][/path]` of a resource URL: the host in lower case, the port only when it is
/// not the scheme's default, the path without its trailing `/`.
fn resource_of(endpoint: &str) -> String {
    match url::Url::parse(endpoint) {
        Ok(url) => {
            let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
            let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{host}{port}{}", url.path().trim_end_matches('/'))
        }
        // Validated endpoints always parse; anything else is used as written.
        Err(_) => endpoint.trim_end_matches('/').to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_azure_deployment_gets_the_same_keys_however_written() {
        let a = SharedKeys::new("p", "https://res.openai.azure.com/", "gpt-4o");
        let b = SharedKeys::new("p", "https://RES.openai.azure.com:443", "gpt-4o");
        assert_eq!(a, b);
        let other_resource = SharedKeys::new("p", "https://res2.openai.azure.com/", "gpt-4o");
        let other_deployment = SharedKeys::new("p", "https://res.openai.azure.com/", "gpt-4.1");
        let other_prefix = SharedKeys::new("q", "https://res.openai.azure.com/", "gpt-4o");
        assert_ne!(a.minute(), other_resource.minute());
        assert_ne!(a.minute(), other_deployment.minute());
        assert_ne!(a.minute(), other_prefix.minute());
        let gateway = SharedKeys::new("p", "https://gw.example.com/aoai/east/", "gpt-4o");
        assert_eq!(gateway.identity(), "gw.example.com/aoai/east/gpt-4o");
        assert_eq!(
            [
                a.window(),
                a.leases(),
                a.sequence(),
                a.cooling(),
                a.disabled()
            ],
            [
                "p:{res.openai.azure.com/gpt-4o}:window",
                "p:{res.openai.azure.com/gpt-4o}:leases",
                "p:{res.openai.azure.com/gpt-4o}:seq",
                "p:{res.openai.azure.com/gpt-4o}:cooling",
                "p:{res.openai.azure.com/gpt-4o}:disabled",
            ]
        );
    }
}
