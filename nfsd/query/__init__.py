"""Query directories: their names, the query language, the table of long queries,
and compact result sets."""
