"""Synthetic retailer data: raw tables per the data contract plus ground truth.

Entry point: `cdp.synthetic.generate.generate(out_root, customers, seed)`; the exact churn oracle is
`cdp.synthetic.oracle.true_churn_probability`.
"""
