//! The Shoal broker. (Being written.)
