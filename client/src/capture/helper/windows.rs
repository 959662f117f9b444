//! The capture helper on Windows (placeholder, filled below).
