//! The harness's own failures (etcd servers, the test PKI): a message naming what it was
//! doing.

/// A harness failure, naming what it was doing.
#[derive(Debug)]
pub struct HarnessError(pub String);

impl std::fmt::Display for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}
