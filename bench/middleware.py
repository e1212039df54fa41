"""Counts the statements a request sends (only when BENCH_COUNT_QUERIES=1, never in timed runs)."""

import json

from django.db import connection


class QueryCountMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        statements: list[str] = []

        def record(execute, sql, params, many, context):
            # Our backend prefixes the search_path inside the same message; show it as sent.
            prefix = getattr(getattr(context["cursor"], "cursor", None), "search_path_sql", "")
            statements.append((prefix + str(sql))[:160])
            return execute(sql, params, many, context)

        with connection.execute_wrapper(record):
            response = self.get_response(request)
            # Evaluate lazy responses inside the wrapper so their queries are counted too.
            if hasattr(response, "render") and not getattr(response, "is_rendered", True):
                response.render()
        response["X-Bench-Queries"] = str(len(statements))
        response["X-Bench-Statements"] = json.dumps(statements)
        return response
