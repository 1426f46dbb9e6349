//! The downloader job: runs inside a bundle image with the host's paths under `/host`,
//! verifies the bundle's packages against its manifest and stages them on the host.
