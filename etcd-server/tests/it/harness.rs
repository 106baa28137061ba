//! The shared test kit (`etcd-test-kit`), under the name these tests have always used.

pub use etcd_test_kit::*;
