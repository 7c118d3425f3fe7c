"""Plans: where each tensor lives, what moves when, and which unit runs each op."""
