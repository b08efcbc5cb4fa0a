"""The embedded default for local runs: moto's DynamoDB and a mock upstream.

Production code never imports this package.
"""
