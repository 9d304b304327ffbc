//! The management API's error answers, in RabbitMQ's shapes: `{"error": …, "reason": …}` with
//! its status codes, and the mapping from AMQP exceptions to them.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use broker::error::reply_code;
use broker::AmqpException;
use serde_json::{json, Value};

/// The realm RabbitMQ's management plugin asks credentials for.
const AUTH_REALM: &str = "Basic realm=\"RabbitMQ Management\"";

#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    body: Option<Value>,
    ask_credentials: bool,
}

impl ApiError {
    fn new(status: StatusCode, error: &str, reason: impl Into<Value>) -> ApiError {
        ApiError {
            status,
            body: Some(json!({ "error": error, "reason": reason.into() })),
            ask_credentials: false,
        }
    }

    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "Object Not Found", "Not Found")
    }

    /// A 404 that says what is missing (`no queue 'q' in vhost '/'`).
    pub fn not_found_because(reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", reason.into())
    }

    pub fn bad_request(reason: impl Into<Value>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", reason)
    }

    /// A required field missing from a request body, as RabbitMQ words it.
    pub fn keys_missing(keys: &[&str]) -> ApiError {
        let listed: Vec<String> = keys
            .iter()
            .map(|k| format!("{{key_missing,{k}}}"))
            .collect();
        ApiError::bad_request(format!("[{}]", listed.join(",")))
    }

    /// No credentials at all: an empty 401 that asks for them.
    pub fn credentials_required() -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            body: None,
            ask_credentials: true,
        }
    }

    /// Wrong user or password (later RabbitMQ versions' wording).
    pub fn login_failed() -> ApiError {
        ApiError {
            ask_credentials: true,
            ..ApiError::new(StatusCode::UNAUTHORIZED, "not_authorized", "Not_Authorized")
        }
    }

    /// Logged in, but not allowed this; RabbitMQ answers 401 here too.
    pub fn not_authorised(reason: &str) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "not_authorised", reason)
    }

    pub fn internal(reason: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_server_error",
            reason.into(),
        )
    }

    /// An AMQP refusal of what the request asked for: the reason without the code's name,
    /// as RabbitMQ's management plugin reports channel errors.
    pub fn from_amqp(error: AmqpException) -> ApiError {
        let detail = match error.reply_text.split_once(" - ") {
            Some((_, detail)) => detail.to_string(),
            None => error.reply_text.clone(),
        };
        match error.reply_code {
            reply_code::NOT_FOUND => ApiError::not_found_because(detail),
            reply_code::ACCESS_REFUSED => {
                ApiError::new(StatusCode::UNAUTHORIZED, "not_authorised", error.reply_text)
            }
            _ => ApiError::bad_request(detail),
        }
    }
}

impl From<AmqpException> for ApiError {
    fn from(error: AmqpException) -> ApiError {
        ApiError::from_amqp(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = match self.body {
            Some(body) => (self.status, Json(body)).into_response(),
            None => self.status.into_response(),
        };
        if self.ask_credentials {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(AUTH_REALM),
            );
        }
        response
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;
