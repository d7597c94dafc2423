"""The MCP endpoint for a person's AI agents: acting through the core's authority, never
around it. Needs the `mcp` extra (`pip install 'relayforge[mcp]'`) when `mcp.enabled`."""
