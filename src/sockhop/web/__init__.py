"""The web: an HTTP/1.1 static-file server (the Apache role) and a web client (the browser role).

protocol.py     the server side of one connection, sans-IO, parsing with httptools (llhttp)
paths.py        request target -> path segments inside the site root, refusing every way out
files.py        the static site: files, directories, precompressed siblings -> a Response
conditional.py  If-None-Match, If-Modified-Since, If-Range
ranges.py       Range: one part (206), several (multipart/byteranges), none satisfiable (416)
listing.py      the HTML listing of a directory
response.py     Response, status lines, headers, HTTP dates, error pages
accesslog.py    Apache's Combined Log Format
client.py       `sockhop get`: an HTTP/1.1 client on plain sockets
service.py      the web as a service: `serve web`, `get`, and its part of `sockhop up`
"""
