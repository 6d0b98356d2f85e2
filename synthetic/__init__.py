"""Synthetic retailer data: raw tables per the data contract plus ground truth.

Entry point: `synthetic.generate.generate(out_root, customers, seed)`; the exact churn oracle is
`synthetic.oracle.true_churn_probability`.
"""
