"""The shop prototype: catalog browsing (grid, filters, paging, product pages) rendered with
Jinja2 templates whose autoescaping keeps catalog text as text."""
