//! Integration test harness for Shoal. (Being written.)
