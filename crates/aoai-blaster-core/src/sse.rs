//! Server-Sent-Events decoding for chat streams (in progress).
