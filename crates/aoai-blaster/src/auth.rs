//! Authentication of requests: api keys, and Entra ID bearer tokens from `azure_identity`.
//!
//! An api key goes out as the `api-key` header. A credential (`az`, `default`,
//! `managed_identity`) yields bearer tokens for the Cognitive Services scope; tokens are cached
//! and refreshed [`REFRESH_MARGIN`] before they expire, and one [`TokenSource`] is shared by every
//! deployment that names the same credential, so forty deployments behind `az` spawn `az` once,
//! not forty times. Secrets never appear in `Debug` output or errors.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aoai_blaster_core::config::AuthConfig;
use aoai_blaster_core::secret::Secret;
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, RetryOptions};

/// The OAuth scope of Azure OpenAI (Cognitive Services).
pub const COGNITIVE_SERVICES_SCOPE: &str = "https://cognitiveservices.azure.com/.default";

/// How long before its expiry a cached token is replaced.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// The longest a token request may take before it counts as failed.
pub const TOKEN_FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request could not be authenticated.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// The credential could not be built (for example `managed_identity` outside Azure).
    #[error("cannot set up credential `{credential}`: {message}")]
    Setup {
        /// The credential's config name (`az`, `default`, `managed_identity`).
        credential: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The credential did not produce a token.
    #[error("credential `{credential}` gave no token: {message}")]
    Token {
        /// The credential's config name.
        credential: &'static str,
        /// What went wrong (never the token itself).
        message: String,
    },
}

/// How one deployment authenticates its requests.
#[derive(Clone)]
pub enum Auth {
    /// A static key sent as the `api-key` header.
    ApiKey(Secret),
    /// Bearer tokens from a shared, caching token source.
    Bearer(Arc<TokenSource>),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::ApiKey(_) => f.write_str("Auth::ApiKey(***)"),
            Auth::Bearer(source) => write!(f, "Auth::Bearer({})", source.name),
        }
    }
}

/// One HTTP header that authenticates a request.
pub struct AuthHeader {
    /// Header name: `api-key` or `authorization`.
    pub name: &'static str,
    /// Header value (a secret: do not log it).
    pub value: Secret,
}

impl Auth {
    /// The header to put on the next request, fetching or refreshing a token when needed.
    pub async fn header(&self) -> Result<AuthHeader, AuthError> {
        match self {
            Auth::ApiKey(key) => Ok(AuthHeader {
                name: "api-key",
                value: key.clone(),
            }),
            Auth::Bearer(source) => {
                let token = source.token().await?;
                Ok(AuthHeader {
                    name: "authorization",
                    value: Secret::new(format!("Bearer {}", token.expose())),
                })
            }
        }
    }

    /// Whether this is a bearer token that can be refreshed after a 401.
    pub fn is_refreshable(&self) -> bool {
        matches!(self, Auth::Bearer(_))
    }

    /// Drops a cached token so that the next request fetches a new one.
    pub fn invalidate(&self) {
        if let Auth::Bearer(source) = self {
            source.invalidate();
        }
    }
}

struct CachedToken {
    token: Secret,
    expires_at: SystemTime,
    /// The source's generation when the token was fetched: an `invalidate` since makes it stale.
    generation: u64,
}

/// A credential plus its token cache, shared by every deployment that uses it.
pub struct TokenSource {
    name: &'static str,
    credential: Arc<dyn TokenCredential>,
    cache: tokio::sync::Mutex<Option<CachedToken>>,
    generation: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("credential", &self.name)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// Wraps a credential under its config name.
    pub fn new(name: &'static str, credential: Arc<dyn TokenCredential>) -> Self {
        Self {
            name,
            credential,
            cache: tokio::sync::Mutex::new(None),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A valid token: the cached one while it has more than [`REFRESH_MARGIN`] left, else a new
    /// one. Concurrent callers wait for one fetch instead of each starting their own.
    pub async fn token(&self) -> Result<Secret, AuthError> {
        let mut cache = self.cache.lock().await;
        let generation = self.generation.load(std::sync::atomic::Ordering::Acquire);
        if let Some(cached) = cache.as_ref()
            && cached.generation == generation
            && !needs_refresh(cached.expires_at, SystemTime::now())
        {
            return Ok(cached.token.clone());
        }
        let fetch = self.credential.get_token(&[COGNITIVE_SERVICES_SCOPE], None);
        let token = match tokio::time::timeout(TOKEN_FETCH_TIMEOUT, fetch).await {
            Ok(Ok(token)) => token,
            Ok(Err(error)) => {
                return Err(AuthError::Token {
                    credential: self.name,
                    message: error.to_string(),
                });
            }
            Err(_) => {
                return Err(AuthError::Token {
                    credential: self.name,
                    message: format!("no answer within {}s", TOKEN_FETCH_TIMEOUT.as_secs()),
                });
            }
        };
        let expires_at = SystemTime::UNIX_EPOCH
            + Duration::from_secs(token.expires_on.unix_timestamp().max(0) as u64);
        let secret = Secret::new(token.token.secret().to_owned());
        *cache = Some(CachedToken {
            token: secret.clone(),
            expires_at,
            generation,
        });
        Ok(secret)
    }

    /// Forgets the cached token (after the service rejected it).
    pub fn invalidate(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Whether a token expiring at `expires_at` must be replaced at `now`.
pub fn needs_refresh(expires_at: SystemTime, now: SystemTime) -> bool {
    match expires_at.duration_since(now) {
        Ok(left) => left <= REFRESH_MARGIN,
        Err(_) => true,
    }
}

/// Reads one environment variable.
type EnvLookup = Box<dyn Fn(&str) -> Option<String> + Send>;

/// Builds [`Auth`] values from config, sharing one [`TokenSource`] per credential kind.
pub struct CredentialRegistry {
    env: EnvLookup,
    sources: HashMap<&'static str, Arc<TokenSource>>,
}

impl fmt::Debug for CredentialRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialRegistry")
            .field("credentials", &self.sources.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Default for CredentialRegistry {
    fn default() -> Self {
        Self::with_env(|name| std::env::var(name).ok())
    }
}

impl CredentialRegistry {
    /// A registry that reads the process environment through `env` (injectable for tests).
    pub fn with_env(env: impl Fn(&str) -> Option<String> + Send + 'static) -> Self {
        Self {
            env: Box::new(env),
            sources: HashMap::new(),
        }
    }

    /// Uses `credential` for every deployment whose `api_key` names `name` (`"az"`,
    /// `"default"` or `"managed_identity"`), instead of the one this registry would build: for
    /// a credential of your own (a certificate, a federated token, a test double).
    pub fn use_credential(&mut self, name: &'static str, credential: Arc<dyn TokenCredential>) {
        self.sources
            .insert(name, Arc::new(TokenSource::new(name, credential)));
    }

    /// The authentication for one deployment's configured `api_key`.
    pub fn auth_for(&mut self, config: &AuthConfig) -> Result<Auth, AuthError> {
        let name = match config {
            AuthConfig::ApiKey(key) => return Ok(Auth::ApiKey(key.clone())),
            AuthConfig::AzureCli => "az",
            AuthConfig::Default => "default",
            AuthConfig::ManagedIdentity => "managed_identity",
        };
        if let Some(source) = self.sources.get(name) {
            return Ok(Auth::Bearer(source.clone()));
        }
        let credential = self.build_credential(name)?;
        let source = Arc::new(TokenSource::new(name, credential));
        self.sources.insert(name, source.clone());
        Ok(Auth::Bearer(source))
    }

    fn build_credential(&self, name: &'static str) -> Result<Arc<dyn TokenCredential>, AuthError> {
        let setup = |error: azure_core::Error| AuthError::Setup {
            credential: name,
            message: error.to_string(),
        };
        match name {
            "az" => azure_identity::AzureCliCredential::new(None)
                .map(|c| c as Arc<dyn TokenCredential>)
                .map_err(setup),
            "managed_identity" => managed_identity().map_err(setup),
            _ => self.default_chain().map_err(setup),
        }
    }

    /// Our `default` chain: workload identity, then a client secret from the environment, then
    /// managed identity only where its environment says we run on Azure (never probing the
    /// instance-metadata address from a laptop), then developer tools (`az`, `azd`).
    fn default_chain(&self) -> azure_core::Result<Arc<dyn TokenCredential>> {
        let env = &self.env;
        let mut chain: Vec<(&'static str, Arc<dyn TokenCredential>)> = Vec::new();
        if env("AZURE_FEDERATED_TOKEN_FILE").is_some() {
            let options = azure_identity::WorkloadIdentityCredentialOptions {
                credential_options: azure_identity::ClientAssertionCredentialOptions {
                    client_options: quick_client_options(),
                },
                ..Default::default()
            };
            chain.push((
                "workload identity",
                azure_identity::WorkloadIdentityCredential::new(Some(options))?,
            ));
        }
        if let (Some(tenant), Some(client), Some(secret)) = (
            env("AZURE_TENANT_ID"),
            env("AZURE_CLIENT_ID"),
            env("AZURE_CLIENT_SECRET"),
        ) {
            let options = azure_identity::ClientSecretCredentialOptions {
                client_options: quick_client_options(),
            };
            chain.push((
                "client secret",
                azure_identity::ClientSecretCredential::new(
                    &tenant,
                    client,
                    secret.into(),
                    Some(options),
                )?,
            ));
        }
        if env("IDENTITY_ENDPOINT").is_some() && env("IDENTITY_HEADER").is_some()
            || env("MSI_ENDPOINT").is_some()
        {
            chain.push(("managed identity", managed_identity()?));
        }
        chain.push((
            "developer tools",
            azure_identity::DeveloperToolsCredential::new(None)?,
        ));
        Ok(Arc::new(ChainedCredential { chain }))
    }
}

fn quick_client_options() -> ClientOptions {
    ClientOptions {
        retry: RetryOptions::none(),
        ..Default::default()
    }
}

fn managed_identity() -> azure_core::Result<Arc<dyn TokenCredential>> {
    let options = azure_identity::ManagedIdentityCredentialOptions {
        client_options: quick_client_options(),
        ..Default::default()
    };
    azure_identity::ManagedIdentityCredential::new(Some(options))
        .map(|c| c as Arc<dyn TokenCredential>)
}

/// Tries each credential in turn; the error names what each one said.
struct ChainedCredential {
    chain: Vec<(&'static str, Arc<dyn TokenCredential>)>,
}

impl fmt::Debug for ChainedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.chain.iter().map(|(name, _)| *name).collect();
        f.debug_struct("ChainedCredential")
            .field("chain", &names)
            .finish()
    }
}

#[async_trait::async_trait]
impl TokenCredential for ChainedCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        let mut failures = Vec::new();
        for (name, credential) in &self.chain {
            match credential.get_token(scopes, options.clone()).await {
                Ok(token) => return Ok(token),
                Err(error) => failures.push(format!("{name}: {error}")),
            }
        }
        Err(azure_core::Error::with_message(
            azure_core::error::ErrorKind::Credential,
            format!(
                "no credential in the `default` chain gave a token ({})",
                failures.join("; ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_refreshed_inside_the_margin_and_after_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(!needs_refresh(now + Duration::from_secs(3600), now));
        assert!(!needs_refresh(
            now + REFRESH_MARGIN + Duration::from_secs(1),
            now
        ));
        assert!(needs_refresh(now + REFRESH_MARGIN, now));
        assert!(needs_refresh(now - Duration::from_secs(1), now));
    }

    #[test]
    fn api_key_auth_never_shows_the_key() {
        let mut registry = CredentialRegistry::with_env(|_| None);
        let auth = registry
            .auth_for(&AuthConfig::ApiKey(Secret::new("sk-very-secret")))
            .expect("api keys always build");
        assert!(!format!("{auth:?}").contains("sk-very-secret"));
        assert!(!auth.is_refreshable());
    }

    #[test]
    fn deployments_naming_the_same_credential_share_one_token_source() {
        let mut registry = CredentialRegistry::with_env(|_| None);
        let (Auth::Bearer(a), Auth::Bearer(b)) = (
            registry.auth_for(&AuthConfig::AzureCli).expect("az builds"),
            registry.auth_for(&AuthConfig::AzureCli).expect("az builds"),
        ) else {
            panic!("az must give bearer auth");
        };
        assert!(Arc::ptr_eq(&a, &b));
    }
}
