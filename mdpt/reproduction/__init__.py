"""The paper's protocol: the `Protocol` value, its plan and cost, its execution (`mdpt reproduce`), the
analysis (numbers), findings (sentences) and render (report.md, figures) of its directory, `mdpt study`, the
transfer matrix and `mdpt quickstart`."""
