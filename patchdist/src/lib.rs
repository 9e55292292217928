//! rollcall-patchdist: 64 KiB chunking, manifests, the chunk cache and the chunk-serving pool.
//!
//! Empty until the package-distribution issue lands.
