"""Reports: terminal tables, figures and trace exports."""
