"""External printing interfaces: the box office's side of the mobile-ticket wallet."""
