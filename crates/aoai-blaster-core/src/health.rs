//! TODO(owner): health
