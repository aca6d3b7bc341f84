//! The admin API's routes. SKELETON: filled in by the admin API work.
