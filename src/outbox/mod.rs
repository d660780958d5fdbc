//! Durable C-STORE forwarding of results to the configured destinations.
