//! Optional API authentication. With `CHOREO_API_TOKENS` set, every request but those to a
//! service's open paths (`/healthz` and `/readyz` everywhere, so probes need no secret) must carry
//! `Authorization: Bearer <one of the tokens>`; any other is answered 401 in the contract's JSON
//! shape with `WWW-Authenticate: Bearer`. Empty (the default) turns it off: the API is then meant
//! for a private network, as it always was.
//!
//! Tokens are secrets: [`ApiTokens`] never shows them in `Debug`, nothing here logs a header,
//! and a presented token is compared with every configured one in constant time, so how long a
//! refusal takes says nothing about how much of a token was right.

use crate::http::ApiError;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The shortest token accepted: shorter ones are guessable.
pub const MIN_TOKEN_LENGTH: usize = 16;

/// The bearer tokens an API accepts (any one of them, so a token can be rotated without a
/// moment when neither works); none means authentication is off.
#[derive(Clone, Default)]
pub struct ApiTokens(Arc<[String]>);

impl ApiTokens {
    /// Tokens from a comma-separated list; blanks around them are ignored.
    pub fn parse(list: &str) -> Self {
        ApiTokens(
            list.split(',')
                .map(str::trim)
                .filter(|token| !token.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    /// Whether authentication is off.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Refuses a token too short to be a secret, or one no HTTP client could send in a header
    /// (only visible ASCII, no spaces). The message names the token by position, never by value.
    pub fn validate(&self) -> crate::Result<()> {
        for (index, token) in self.0.iter().enumerate() {
            let position = index + 1;
            if token.len() < MIN_TOKEN_LENGTH {
                return Err(crate::Error::Usage(format!(
                    "CHOREO_API_TOKENS ([http] api_tokens): token {position} is \
                     shorter than {MIN_TOKEN_LENGTH} characters"
                )));
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(crate::Error::Usage(format!(
                    "CHOREO_API_TOKENS ([http] api_tokens): token {position} \
                     holds a character other than visible ASCII"
                )));
            }
        }
        Ok(())
    }

    /// Whether `presented` is one of the tokens. Every token is compared, each in constant time
    /// for its length; only whether a length matched can show in the timing.
    pub fn admits(&self, presented: &[u8]) -> bool {
        let found = self.0.iter().fold(subtle::Choice::from(0), |found, token| {
            found | token.as_bytes().ct_eq(presented)
        });
        found.into()
    }
}

impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiTokens({} redacted)", self.0.len())
    }
}

impl<'de> Deserialize<'de> for ApiTokens {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(ApiTokens::parse(&String::deserialize(deserializer)?))
    }
}

/// What the check needs: the tokens, and the paths open without one.
#[derive(Debug, Clone)]
struct Gate {
    tokens: ApiTokens,
    open_paths: Arc<[&'static str]>,
}

/// `router` with every request outside `open_paths` (exact paths) checked for a bearer token
/// from `tokens`; `router` unchanged when `tokens` is empty. Put it outside the concurrency
/// limit, so requests without a token cannot take the slots of those with one.
pub fn required(router: Router, tokens: ApiTokens, open_paths: &[&'static str]) -> Router {
    if tokens.is_empty() {
        return router;
    }
    let gate = Gate {
        tokens,
        open_paths: open_paths.into(),
    };
    router.layer(axum::middleware::from_fn_with_state(gate, check))
}

async fn check(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    if gate.open_paths.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    match bearer(&request) {
        Some(token) if gate.tokens.admits(token) => next.run(request).await,
        Some(_) => refusal("wrong bearer token", "Bearer error=\"invalid_token\""),
        None => refusal("missing bearer token", "Bearer"),
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case).
fn bearer(request: &Request) -> Option<&[u8]> {
    let value = request.headers().get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    Some(token.trim_ascii())
}

fn refusal(error: &str, challenge: &'static str) -> Response {
    tracing::debug!(error, "API request refused");
    let body = ApiError::new(StatusCode::UNAUTHORIZED, error).with_details(vec![
        "send `Authorization: Bearer <token>` with one of the service's API tokens".to_owned(),
    ]);
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    const TOKEN: &str = "a-token-of-sixteen-or-more";
    const OTHER: &str = "another-token-long-enough";

    fn router() -> Router {
        let routes = Router::new()
            .route("/healthz", get(|| async { "alive" }))
            .route("/secret", get(|| async { "secret" }));
        required(
            routes,
            ApiTokens::parse(&format!("{TOKEN}, {OTHER}")),
            &["/healthz"],
        )
    }

    async fn status(authorization: Option<&str>, path: &str) -> (StatusCode, Option<String>) {
        let mut request = Request::get(path);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let response = router()
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let challenge = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        (response.status(), challenge)
    }

    #[tokio::test]
    async fn a_request_without_a_right_bearer_token_is_refused_401_with_a_challenge() {
        let (missing, challenge) = status(None, "/secret").await;
        let (wrong, _) = status(Some("Bearer not-the-token-at-all"), "/secret").await;
        let (prefix, _) = status(Some(&format!("Bearer {}", &TOKEN[..10])), "/secret").await;
        let (basic, _) = status(Some(&format!("Basic {TOKEN}")), "/secret").await;

        assert_eq!(missing, StatusCode::UNAUTHORIZED);
        assert_eq!(challenge.as_deref(), Some("Bearer"));
        assert_eq!(wrong, StatusCode::UNAUTHORIZED);
        assert_eq!(prefix, StatusCode::UNAUTHORIZED);
        assert_eq!(basic, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn any_configured_token_is_admitted_and_open_paths_need_none() {
        let (first, _) = status(Some(&format!("Bearer {TOKEN}")), "/secret").await;
        let (second, _) = status(Some(&format!("bearer {OTHER}")), "/secret").await;
        let (open, _) = status(None, "/healthz").await;

        assert_eq!(first, StatusCode::OK);
        assert_eq!(second, StatusCode::OK);
        assert_eq!(open, StatusCode::OK);
    }

    #[test]
    fn tokens_never_show_in_debug_and_short_or_unsendable_ones_are_refused() {
        let tokens = ApiTokens::parse(&format!("{TOKEN},{OTHER}"));

        assert_eq!(format!("{tokens:?}"), "ApiTokens(2 redacted)");
        assert!(tokens.validate().is_ok());
        let short = ApiTokens::parse(&format!("{TOKEN},tiny"))
            .validate()
            .expect_err("refused");
        assert!(short.to_string().contains("token 2"), "{short}");
        assert!(!short.to_string().contains("tiny"), "{short}");
        assert!(
            ApiTokens::parse("sixteen chars but spaces")
                .validate()
                .is_err()
        );
        assert!(ApiTokens::parse(" , ").is_empty());
    }
}
