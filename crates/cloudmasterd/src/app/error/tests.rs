//! The app's errors come back as the wire's codes, fields and messages.

use super::*;

#[test]
fn every_wire_code_comes_back_as_itself() {
    for code in [
        ErrorCode::InvalidInput,
        ErrorCode::MalformedBody,
        ErrorCode::BodyTooLarge,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::Conflict,
        ErrorCode::NoCapacity,
        ErrorCode::NoneLeft,
        ErrorCode::HostUnavailable,
        ErrorCode::EventsExpired,
        ErrorCode::RateLimited,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::InProgress,
        ErrorCode::InsufficientStorage,
        ErrorCode::Internal,
    ] {
        let wire = ApiError::new(code, "m").with_field("f");
        assert_eq!(Error::from(wire.clone()).to_wire(), wire, "{code:?}");
    }
}

/// The scheduler's, the image import's and the fetch's own errors are
/// answered as they were when they were built as the wire's document.
#[test]
fn the_lower_layers_errors_keep_their_codes_and_fields() {
    let cases: Vec<(Error, ErrorCode, &str, &str)> = vec![
        (
            Unplaced::NoSuchHost("zz".into()).into(),
            ErrorCode::NotFound,
            "host",
            "host 'zz' not found",
        ),
        (
            Unplaced::NoCapacity {
                message: "full".into(),
                field: "memory_mib",
            }
            .into(),
            ErrorCode::NoCapacity,
            "memory_mib",
            "full",
        ),
        (
            ImportError::Invalid {
                field: "disk".into(),
                message: "bad".into(),
            }
            .into(),
            ErrorCode::InvalidInput,
            "disk",
            "bad",
        ),
        (
            ImportError::TooLarge {
                field: "kernel".into(),
                message: "big".into(),
            }
            .into(),
            ErrorCode::BodyTooLarge,
            "kernel",
            "big",
        ),
        (
            FetchError::Invalid {
                field: "sha256",
                message: "differs".into(),
            }
            .into(),
            ErrorCode::InvalidInput,
            "sha256",
            "differs",
        ),
        (
            FetchError::TooLarge(5).into(),
            ErrorCode::BodyTooLarge,
            "url",
            "the URL's data is larger than this master's limit of 5 bytes",
        ),
        (
            StoreError::Refused {
                message: "live".into(),
                field: "force",
            }
            .into(),
            ErrorCode::Conflict,
            "force",
            "live",
        ),
    ];
    for (e, code, field, message) in cases {
        let b = e.body();
        assert_eq!(
            (b.code, b.field.as_deref(), b.message.as_str()),
            (code, Some(field), message)
        );
    }
    let io = std::io::Error::other("disk full");
    let b = Error::from(FetchError::Write(io)).body();
    assert_eq!(
        (b.code, b.field, b.message.as_str()),
        (ErrorCode::Internal, None, "writing the upload: disk full")
    );
    let b = Error::from(ImportError::Io("qemu-img".into())).body();
    assert_eq!(
        (b.code, b.message.as_str()),
        (ErrorCode::Internal, "qemu-img")
    );
}
