//! The app layer's errors: what a rule refused or what failed, with no HTTP
//! in them. `api::error` translates each kind to its status and error code.

use crate::images::ImportError;
use crate::scheduler::Unplaced;
use crate::store::StoreError;
use crate::uploads::fetch::FetchError;
use cm_api::{ApiError, ErrorBody, ErrorCode};
use std::fmt;

/// What a user is told, and the request field at fault when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detail {
    pub message: String,
    pub field: Option<String>,
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        match &self.field {
            Some(field) => write!(f, " (field: {field})"),
            None => Ok(()),
        }
    }
}

impl From<String> for Detail {
    fn from(message: String) -> Detail {
        Detail {
            message,
            field: None,
        }
    }
}

impl From<&str> for Detail {
    fn from(message: &str) -> Detail {
        Detail::from(message.to_string())
    }
}

/// Every way a rule of the master can refuse or fail.
// `app::Error`: the layer's name says which error it is.
#[allow(clippy::error_impl_error)]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value out of range or of the wrong form.
    #[error("{0}")]
    Invalid(Detail),
    /// A body that is not the expected document.
    #[error("{0}")]
    Malformed(Detail),
    /// More data than the master accepts.
    #[error("{0}")]
    TooLarge(Detail),
    /// No proof of who asks, or a wrong one.
    #[error("{0}")]
    Unauthorized(Detail),
    /// A known caller that may not do this.
    #[error("{0}")]
    Forbidden(Detail),
    #[error("{0}")]
    NotFound(Detail),
    #[error("{0}")]
    AlreadyExists(Detail),
    /// The thing's current state does not allow the change.
    #[error("{0}")]
    Conflict(Detail),
    /// No host can take the instance.
    #[error("{0}")]
    NoCapacity(Detail),
    /// Every dynamic record of a domain is taken.
    #[error("{0}")]
    NoneLeft(Detail),
    /// The host that must answer is down or silent.
    #[error("{0}")]
    HostUnavailable(Detail),
    /// What was asked for existed once and was removed (expired events).
    #[error("{0}")]
    Gone(Detail),
    #[error("{0}")]
    RateLimited(Detail),
    /// An idempotency key sent again with another request.
    #[error("{0}")]
    KeyReused(Detail),
    /// The first request with an idempotency key still runs.
    #[error("{0}")]
    InProgress(Detail),
    /// No room on the master's disk.
    #[error("{0}")]
    NoRoom(Detail),
    /// The master's own fault.
    #[error("{0}")]
    Internal(Detail),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every variant holds its `Detail`: one list of them for `detail` and
/// `detail_mut` (the match binds by reference or by mutable reference).
macro_rules! detail_of {
    ($e:expr) => {
        match $e {
                Error::Invalid(d)
                | Error::Malformed(d)
                | Error::TooLarge(d)
                | Error::Unauthorized(d)
                | Error::Forbidden(d)
                | Error::NotFound(d)
                | Error::AlreadyExists(d)
                | Error::Conflict(d)
                | Error::NoCapacity(d)
                | Error::NoneLeft(d)
                | Error::HostUnavailable(d)
                | Error::Gone(d)
                | Error::RateLimited(d)
                | Error::KeyReused(d)
                | Error::InProgress(d)
                | Error::NoRoom(d)
                | Error::Internal(d) => d,
        }
    };
}

impl Error {
    pub fn invalid(field: &str, message: impl Into<String>) -> Error {
        Error::Invalid(Detail::from(message.into())).field(field)
    }

    /// `what 'name' not found`, the name made printable.
    pub fn not_found(what: &str, name: &str) -> Error {
        let name = cm_api::validate::printable(name);
        Error::NotFound(Detail::from(format!("{what} '{name}' not found")))
    }

    pub fn conflict(message: impl Into<String>) -> Error {
        Error::Conflict(Detail::from(message.into()))
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error::Internal(Detail::from(message.into()))
    }

    /// Name the request field at fault.
    pub fn field(mut self, f: &str) -> Error {
        self.detail_mut().field = Some(f.to_string());
        self
    }

    pub fn detail(&self) -> &Detail {
        detail_of!(self)
    }

    fn detail_mut(&mut self) -> &mut Detail {
        detail_of!(self)
    }

    /// The wire's word for this kind (`cm_api::ErrorCode`).
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Invalid(_) => ErrorCode::InvalidInput,
            Error::Malformed(_) => ErrorCode::MalformedBody,
            Error::TooLarge(_) => ErrorCode::BodyTooLarge,
            Error::Unauthorized(_) => ErrorCode::Unauthorized,
            Error::Forbidden(_) => ErrorCode::Forbidden,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Error::Conflict(_) => ErrorCode::Conflict,
            Error::NoCapacity(_) => ErrorCode::NoCapacity,
            Error::NoneLeft(_) => ErrorCode::NoneLeft,
            Error::HostUnavailable(_) => ErrorCode::HostUnavailable,
            Error::Gone(_) => ErrorCode::EventsExpired,
            Error::RateLimited(_) => ErrorCode::RateLimited,
            Error::KeyReused(_) => ErrorCode::IdempotencyKeyReused,
            Error::InProgress(_) => ErrorCode::InProgress,
            Error::NoRoom(_) => ErrorCode::InsufficientStorage,
            Error::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The wire document of this error (`{"error": {code, message, field}}`).
    pub fn to_wire(&self) -> ApiError {
        ApiError { error: self.body() }
    }

    /// What is recorded of a failure that outlives the request (an
    /// upload's fetch): the inside of the wire document.
    pub fn body(&self) -> ErrorBody {
        let d = self.detail();
        ErrorBody {
            code: self.code(),
            message: d.message.clone(),
            field: d.field.clone(),
        }
    }

    /// An import's failure, as the upload records it and the API answers.
    pub fn from_fetch(e: &FetchError) -> Error {
        match e {
            FetchError::Invalid { field, message } => Error::invalid(field, message.clone()),
            FetchError::TooLarge(_) => Error::TooLarge(Detail::from(e.to_string())).field("url"),
            FetchError::Write(_) => Error::internal(e.to_string()),
        }
    }
}

/// A refusal already in the wire's words (cm-api's checks shared with `cm`,
/// such as `check_sha256`).
impl From<ApiError> for Error {
    fn from(e: ApiError) -> Error {
        let d = Detail {
            message: e.error.message,
            field: e.error.field,
        };
        match e.error.code {
            ErrorCode::InvalidInput => Error::Invalid(d),
            ErrorCode::MalformedBody => Error::Malformed(d),
            ErrorCode::BodyTooLarge => Error::TooLarge(d),
            ErrorCode::Unauthorized => Error::Unauthorized(d),
            ErrorCode::Forbidden => Error::Forbidden(d),
            ErrorCode::NotFound => Error::NotFound(d),
            ErrorCode::AlreadyExists => Error::AlreadyExists(d),
            ErrorCode::Conflict => Error::Conflict(d),
            ErrorCode::NoCapacity => Error::NoCapacity(d),
            ErrorCode::NoneLeft => Error::NoneLeft(d),
            ErrorCode::HostUnavailable => Error::HostUnavailable(d),
            ErrorCode::EventsExpired => Error::Gone(d),
            ErrorCode::RateLimited => Error::RateLimited(d),
            ErrorCode::IdempotencyKeyReused => Error::KeyReused(d),
            ErrorCode::InProgress => Error::InProgress(d),
            ErrorCode::InsufficientStorage => Error::NoRoom(d),
            ErrorCode::MethodNotAllowed | ErrorCode::Internal => Error::Internal(d),
        }
    }
}

impl From<ImportError> for Error {
    fn from(e: ImportError) -> Error {
        match e {
            ImportError::Invalid { field, message } => Error::invalid(&field, message),
            ImportError::TooLarge { field, message } => {
                Error::TooLarge(Detail::from(message)).field(&field)
            }
            ImportError::Io(m) => Error::internal(m),
        }
    }
}

impl From<FetchError> for Error {
    fn from(e: FetchError) -> Error {
        Error::from_fetch(&e)
    }
}

impl From<Unplaced> for Error {
    fn from(u: Unplaced) -> Error {
        let field = u.field();
        match u {
            Unplaced::NoSuchHost(name) => Error::not_found("host", &name),
            Unplaced::NoCapacity { message, .. } => Error::NoCapacity(Detail::from(message)),
        }
        .field(field)
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        match e {
            StoreError::NotFound { what, name } => Error::not_found(what, &name),
            StoreError::Conflict(m) => Error::conflict(m),
            StoreError::AlreadyExists(m) => Error::AlreadyExists(Detail::from(m)).field("name"),
            StoreError::Refused { message, field } => Error::conflict(message).field(field),
            StoreError::Unplaced(u) => Error::from(u),
            other => {
                tracing::error!("store: {other}");
                Error::internal(format!("store: {other}"))
            }
        }
    }
}

#[cfg(test)]
mod tests;
