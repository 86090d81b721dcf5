//! Every problem of a spec at once, each with the path of its field.

use super::SpecError;

/// The problems of a spec: at most [`SpecErrors::MAX`], in the order found.
/// Shown one per line as `assemblies[1].services[0].check.http: not a URL`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl SpecErrors {
    /// More than this many are not kept (the first ones say enough).
    pub const MAX: usize = 20;

    pub fn one(path: impl Into<String>, message: impl Into<String>) -> SpecErrors {
        let mut e = SpecErrors::default();
        e.push(path, message);
        e
    }

    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        if self.0.len() < Self::MAX {
            self.0.push(SpecError {
                path: path.into(),
                message: message.into(),
            });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The path of the first problem (the API's `field`).
    pub fn first_path(&self) -> &str {
        self.0.first().map(|e| e.path.as_str()).unwrap_or("spec")
    }

    /// `Ok(())` when there is none.
    pub fn into_result(self) -> Result<(), SpecErrors> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl std::fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}
